// Which environment variables hold secrets for a config: local commands run without them.
import type { NodropConfig } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { ACTION_SECRET_ENV, secretEnvNames } from "./hosts.js";

const config = (fields: Partial<Pick<NodropConfig, "ssh" | "hosts">>) => fields as NodropConfig;

describe("secretEnvNames", () => {
  it("names every privateKeyEnv and passphraseEnv, in ssh defaults and in each host, once, and the action's", () => {
    const names = secretEnvNames(
      config({
        ssh: { user: "deploy", privateKeyEnv: "DEPLOY_KEY", passphraseEnv: "DEPLOY_PASS" },
        hosts: { web1: { address: "10.0.0.1" }, web2: { address: "10.0.0.2", privateKeyEnv: "WEB2_KEY", passphraseEnv: "DEPLOY_PASS" }, bastion: { address: "10.0.0.9", privateKeyEnv: "JUMP_KEY" } },
      }),
    );
    expect([...names].sort()).toEqual([...ACTION_SECRET_ENV, "DEPLOY_KEY", "DEPLOY_PASS", "JUMP_KEY", "WEB2_KEY"].sort());
  });

  it("an executor plugin's options named ...Env are secrets too", () => {
    const names = secretEnvNames(config({ hosts: { box: { use: "./agent.mjs", tokenEnv: "AGENT_TOKEN", environment: "prod" } } }));
    expect(names).toContain("AGENT_TOKEN");
    expect(names).not.toContain("prod");
    const nested = secretEnvNames(config({ hosts: { box: { use: "./agent.mjs", auth: { tokenEnv: "NESTED_TOKEN" }, peers: [{ keyEnv: "PEER_KEY" }] } } }));
    expect(nested).toEqual(expect.arrayContaining(["NESTED_TOKEN", "PEER_KEY"]));
  });

  it("a config without SSH still names the action's variables (NODROP_ACTION_SSH_KEY, NODROP_ACTION_SSH_PASSPHRASE)", () => {
    expect(secretEnvNames(config({}))).toEqual(["NODROP_ACTION_SSH_KEY", "NODROP_ACTION_SSH_PASSPHRASE"]);
  });
});

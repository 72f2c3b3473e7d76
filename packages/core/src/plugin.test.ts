// Plugin definitions: what define* checks, what a plugin carries, and how it is recognised.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { PLUGIN_CONTRACT, defineExecutor, defineProxy, defineStrategy, isPlugin } from "./plugin.js";
import { object, optional, int } from "./schema.js";
import { singlePool } from "./routing.js";
import { CORE_VERSION } from "./version.js";

const optionsSchema = object({ batch: optional(int({ min: 1 }), 1) });
const strategy = () => ({ name: "one", plan: () => ({ strategy: "one", version: "v", phases: [], notes: [] }) });

describe("defineStrategy, defineProxy, defineExecutor", () => {
  it("stamp the kind, the plugin contract and this core's version, and freeze the plugin", () => {
    const plugin = defineStrategy({ name: "one", optionsSchema, create: strategy });
    expect(plugin).toMatchObject({ kind: "strategy", name: "one", contract: PLUGIN_CONTRACT, coreVersion: CORE_VERSION });
    // The version compiled in (vitest defines it as the build does): core's package.json version.
    expect(CORE_VERSION).toBe(JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).version);
    expect(Object.isFrozen(plugin)).toBe(true);
    expect(isPlugin(plugin)).toBe(true);
  });

  it("recognise a plugin by a registered symbol, as another copy of core defines it", () => {
    const forged = { kind: "strategy", name: "x", contract: 1, [Symbol.for("@nodrop/core/plugin")]: true };
    expect(isPlugin(forged)).toBe(true);
    // Shape alone is not enough: a plain object with the same fields is not a plugin.
    expect(isPlugin({ kind: "strategy", name: "x", contract: 1, create: strategy, optionsSchema })).toBe(false);
    expect(isPlugin(undefined)).toBe(false);
    expect(isPlugin(strategy)).toBe(false);
  });

  it.each([
    ["a name with a space", { name: "one two", optionsSchema, create: strategy }, 'strategy plugin "one two": name must be'],
    ["no name", { optionsSchema, create: strategy }, "strategy plugin (unnamed): name must be"],
    ["create not a function", { name: "one", optionsSchema, create: "rolling" }, 'strategy plugin "one": create must be a function'],
    ["no options schema", { name: "one", create: strategy }, 'strategy plugin "one": optionsSchema must be a core schema'],
    ["an options schema that is neither", { name: "one", optionsSchema: { validate: () => true }, create: strategy }, "optionsSchema must be a core schema (schema.object(...)) or a Standard Schema validator"],
  ])("refuse %s with E_PLUGIN naming the plugin", (_case, definition, message) => {
    let error: unknown;
    try {
      defineStrategy(definition as never);
    } catch (e) {
      error = e;
    }
    expect(NodropError.is(error) && error.code).toBe("E_PLUGIN");
    expect((error as Error).message).toContain(message);
  });

  it("defineProxy needs its capabilities; defineExecutor makes an executor plugin", () => {
    expect(() => defineProxy({ name: "p", optionsSchema, create: () => ({}) as never } as never)).toThrow('proxy plugin "p": capabilities must be an object of flags');
    const proxy = defineProxy({
      name: "p",
      optionsSchema,
      capabilities: { versionPinning: false, timedSwitch: false, affinity: false },
      create: () => ({ name: "p", capabilities: { versionPinning: false, timedSwitch: false, affinity: false }, check: async () => ({ ok: true, details: [] }), apply: async () => ({ generation: "1", confirmMs: 0, drainMs: 0 }), current: async () => singlePool([]) }),
    });
    expect(proxy.kind).toBe("proxy");
    const executor = defineExecutor({ name: "e", optionsSchema, create: ({ host }) => ({ name: "e", host, exec: async () => ({ code: 0, stdout: "", stderr: "", durationMs: 0 }) }) });
    expect(executor.kind).toBe("executor");
    expect(executor.create({ host: "box", options: { batch: 1 }, baseDir: "/", env: {}, log: () => undefined }).host).toBe("box");
  });
});

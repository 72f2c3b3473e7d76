// The one-host strategy's plans, and the guide that shows this package: its code blocks are these files.
import { readFileSync } from "node:fs";
import type { ObservedInstance } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import plugin, { planOneHost } from "./index.js";

const fleet = (hosts: Record<string, number>, patch: Partial<ObservedInstance> = {}): ObservedInstance[] =>
  Object.entries(hosts).flatMap(([host, count]) => Array.from({ length: count }, (_, n) => ({ id: `${host}-${n + 1}`, host, address: "127.0.0.1", port: 8000 + n, version: "v1", healthy: true, inPool: true, ...patch })));
const caps = { versionPinning: false, timedSwitch: false, affinity: false };
const shape = (plan: ReturnType<typeof planOneHost>) => plan.phases.map((p) => [p.name, p.instances.join(" "), p.steps.find((s) => s.kind === "route")?.routing.pools.all?.join(" ")]);

describe("one-host strategy", () => {
  it("three hosts: one at a time, all of a host in one change, then everything back", () => {
    const plan = planOneHost({ instances: fleet({ a: 2, b: 2, c: 2 }), version: "v2", proxy: caps, options: { minInPool: 2 } });
    expect(shape(plan)).toEqual([
      ["a", "a-1 a-2", "b-1 b-2 c-1 c-2"],
      ["b", "b-1 b-2", "a-1 a-2 c-1 c-2"],
      ["c", "c-1 c-2", "a-1 a-2 b-1 b-2"],
      ["finish", "", "a-1 a-2 b-1 b-2 c-1 c-2"],
    ]);
  });

  it("one host of four: batches that leave minInPool serving", () => {
    const plan = planOneHost({ instances: fleet({ local: 4 }), version: "v2", proxy: caps, options: { minInPool: 2 } });
    expect(shape(plan)).toEqual([
      ["local (1/2)", "local-1 local-2", "local-3 local-4"],
      ["local (2/2)", "local-3 local-4", "local-1 local-2"],
      ["finish", "", "local-1 local-2 local-3 local-4"],
    ]);
  });

  it("instances out of the pool first, and they stay out until they are done; nothing to do on the version", () => {
    const instances = fleet({ a: 2, b: 1 }).map((i) => (i.id === "b-1" ? { ...i, inPool: false, healthy: false } : i));
    const plan = planOneHost({ instances, version: "v2", proxy: caps, options: { minInPool: 1 } });
    expect(shape(plan)).toEqual([
      ["out of pool", "b-1", undefined],
      ["a", "a-1 a-2", ""],
      ["finish", "", "a-1 a-2 b-1"],
    ]);
    expect(planOneHost({ instances: fleet({ a: 2 }, { version: "v2" }), version: "v2", proxy: caps, options: { minInPool: 1 } }).phases).toEqual([]);
  });

  it("refuses a fleet that cannot spare one instance, naming the option", () => {
    expect(() => planOneHost({ instances: fleet({ a: 2 }), version: "v2", proxy: caps, options: { minInPool: 2 } })).toThrow("strategy.minInPool: 2 of 2 instances must keep serving");
  });

  it("is a strategy plugin with its options schema", () => {
    expect(plugin).toMatchObject({ kind: "strategy", name: "one-host" });
    expect(plugin.create().name).toBe("one-host");
  });

  it("docs/guides/write-a-strategy.md shows this package as it is", () => {
    const guide = readFileSync(new URL("../../../docs/guides/write-a-strategy.md", import.meta.url), "utf8");
    for (const [file, lang] of [["src/index.ts", "ts"], ["package.json", "json"]]) {
      const text = readFileSync(new URL(`../${file}`, import.meta.url), "utf8");
      expect(guide, file).toContain(`\`\`\`${lang}\n${text}\`\`\``);
    }
  });
});

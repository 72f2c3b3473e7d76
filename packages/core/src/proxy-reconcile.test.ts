import { describe, expect, it } from "vitest";
import { readRoutingInForce } from "./proxy-reconcile.js";
import { singlePool } from "./routing.js";
import type { InstanceControl, Proxy, Routing } from "./types.js";

const controls: InstanceControl[] = ["a", "b"].map((id, i) => ({
  spec: { id, host: "local", address: "127.0.0.1", port: 8011 + i, slots: [8011 + i, 9011 + i] as const },
  stop: async () => {},
  update: async () => {},
  start: async () => {},
}));

function proxy(current: Routing, also: Routing[]): Proxy {
  return {
    name: "nginx",
    capabilities: { versionPinning: true, timedSwitch: true, affinity: false },
    check: async () => ({ ok: true, details: [] }),
    apply: async () => ({ generation: "1", confirmMs: 0, drainMs: 0 }),
    current: async () => current,
    alsoInForce: async () => also,
  };
}

describe("readRoutingInForce with a change whose reload was never confirmed", () => {
  const before = singlePool(["a", "b"]);
  const switched: Routing = { pools: { old: ["a"], new: ["b"] }, defaultPool: "old", pins: {}, switchDefault: { to: "new", afterMs: 500 } };

  it("plans from the file's routing, settled; the one before and the file's as written count as possibly in force; a first phase puts it into effect", async () => {
    const read = await readRoutingInForce({ proxy: proxy(switched, [before]), instances: controls });
    expect(read.routing).toEqual({ pools: { old: ["a"], new: ["b"] }, defaultPool: "new", pins: {} });
    expect(read.others).toEqual(expect.arrayContaining([before, switched]));
    expect(read.reconcile?.phase.steps).toEqual([{ kind: "route", routing: read.routing, why: "the routing in the proxy's file put into effect (a change to it was never confirmed)" }]);
    expect(read.reconcile?.note).toContain("its reload never confirmed");
  });

  it("nothing to do when what is on record is the file's own routing, or nothing", async () => {
    expect(await readRoutingInForce({ proxy: proxy(before, [before]), instances: controls })).toEqual({ routing: before, others: [] });
    expect(await readRoutingInForce({ proxy: proxy(before, []), instances: controls })).toEqual({ routing: before, others: [] });
  });

  it("a routing on record whose slots are not the instances' ports is refused (the record is a file on the proxy host)", async () => {
    const forged: Routing = { ...before, slots: { a: 22, b: 9012 } };
    await expect(readRoutingInForce({ proxy: proxy(before, [forged]), instances: controls })).rejects.toThrow(/refusing to deploy: on proxy nginx, the routing before an unconfirmed change: /);
  });
});

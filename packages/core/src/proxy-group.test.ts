// The group's own logic against recording proxies: what it sends to each member and what it says
// when one fails. Real nginx proxies in front of one fleet are in examples/wsgi-fleet/test/proxies.test.ts.
import { describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { proxyGroup } from "./proxy-group.js";
import { rejected } from "./test-support.js";
import { singlePool } from "./routing.js";
import type { Proxy, ProxyApplyResult, ProxyContext, ProxyInstance, Routing } from "./types.js";

interface Recording extends Proxy {
  readonly applied: { routing: Routing; instances: readonly ProxyInstance[]; context: ProxyContext | undefined }[];
  inForce: Routing | undefined;
  /** The next apply() fails this way (the adapter undid its change: previous; or it cannot say: unknown). */
  failNext?: { inForce: "previous" | "unknown" | "new"; message: string };
}

function recording(inForce: Routing | undefined, offsetMs = 0): Recording {
  const proxy: Recording = {
    name: "nginx",
    clock: async () => ({ offsetMs, errorMs: 1 }),
    capabilities: { versionPinning: true, timedSwitch: true, affinity: true, poolSlots: true, backgroundDrain: false },
    applied: [],
    inForce,
    check: async () => ({ ok: true, details: ["fine"] }),
    current: async () => proxy.inForce,
    async apply(routing, instances, context): Promise<ProxyApplyResult> {
      proxy.applied.push({ routing, instances, context });
      const failure = proxy.failNext;
      proxy.failNext = undefined;
      if (failure) {
        if (failure.inForce === "new") proxy.inForce = routing;
        throw new NodropError("E_PROXY_TEST", failure.message, { routingInForce: failure.inForce });
      }
      proxy.inForce = routing;
      return { generation: String(proxy.applied.length + 1), confirmMs: 10, drainMs: 5 };
    },
  };
  return proxy;
}

/** Makes the member's second apply() (the put-back after a failed change) fail with `error`. */
function failSecondApply(proxy: Recording, error: NodropError): void {
  const apply = proxy.apply.bind(proxy);
  let calls = 0;
  proxy.apply = async (routing, list, context) => {
    calls += 1;
    if (calls === 2) throw error;
    return apply(routing, list, context);
  };
}

const instances: ProxyInstance[] = ["a", "b", "c"].map((id, i) => ({ id, host: "web", address: "127.0.0.1", port: 8011 + i, version: "v1" }));
const all = singlePool(["a", "b", "c"]);
const withoutC = singlePool(["a", "b"]);

describe("proxyGroup", () => {
  it("a change goes to every member and counts once each has confirmed it", async () => {
    const [lb1, lb2] = [recording(all), recording(all)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }]);
    expect(await group.current()).toEqual(all);
    const result = await group.apply(withoutC, instances);
    expect(result).toMatchObject({ generation: "2+2", confirmMs: 10, drainMs: 5 });
    for (const member of [lb1, lb2]) expect(member.inForce).toEqual(withoutC);
  });

  it("one member refuses the change: the others are put back on the previous routing, and the error names the member", async () => {
    const [lb1, lb2, lb3] = [recording(all), recording(all), recording(all)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }, { label: "lb3", proxy: lb3 }]);
    await group.current();
    lb2.failNext = { inForce: "previous", message: "nginx -t failed on lb2\nunknown directive" };
    const error = await rejected(group.apply(withoutC, instances));
    expect(error.code).toBe("E_PROXY_TEST");
    expect(error.routingInForce).toBe("previous");
    expect(error.message).toBe("proxy lb2: nginx -t failed on lb2; lb1, lb3 were put back on the previous routing\nunknown directive");
    for (const member of [lb1, lb2, lb3]) expect(member.inForce).toEqual(all);
    // lb1 and lb3 were sent the change, then the routing before it.
    expect(lb1.applied.map((a) => a.routing)).toEqual([withoutC, all]);
    expect(lb2.applied.map((a) => a.routing)).toEqual([withoutC]);
  });

  it("a member that cannot say what it routes by, and one that cannot be put back: unknown, and the error says where each stands", async () => {
    const [lb1, lb2] = [recording(all), recording(all)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }]);
    await group.current();
    lb2.failNext = { inForce: "unknown", message: "the connection to lb2 dropped" };
    // lb2's restore fails too, leaving it unknown; lb1 goes back.
    failSecondApply(lb2, new NodropError("E_SSH_DROPPED", "still down", { routingInForce: "unknown" }));
    const error = await rejected(group.apply(withoutC, instances));
    expect(error.routingInForce).toBe("unknown");
    expect(error.message).toBe("proxy lb2: the connection to lb2 dropped; the proxies now route: lb1 the previous routing, lb2 unknown");
  });

  it("a timed switch: every member gets the same instant, each on its own host's clock (the offsets measured at preflight)", async () => {
    const [lb1, lb2] = [recording(all, 0), recording(all, 5000)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }]);
    expect((await group.measureClocks()).map((c) => c.clock.offsetMs)).toEqual([0, 5000]);
    const switched: Routing = { pools: { a: ["a"], b: ["b", "c"] }, defaultPool: "b", pins: {}, switchDefault: { to: "a", afterMs: 500 } };
    const before = Date.now();
    await group.apply(switched, instances);
    const [one, two] = [lb1, lb2].map((m) => m.applied[0]!.context?.switchAt);
    expect(two! - one!).toBe(5000);
    expect(one).toBeGreaterThanOrEqual(before + 500);
  });

  it("a member whose adapter cannot tell its clock: a timed switch is refused, naming it", async () => {
    const blind = { ...recording(all), clock: undefined };
    const group = proxyGroup([{ label: "lb1", proxy: recording(all) }, { label: "lb2", proxy: blind }]);
    await expect(group.measureClocks()).rejects.toMatchObject({ code: "E_PREFLIGHT", message: expect.stringContaining("lb2 cannot report its") });
  });

  it("current(): members that route differently are an error naming each one's pools", async () => {
    const group = proxyGroup([{ label: "lb1", proxy: recording(all) }, { label: "lb2", proxy: recording(withoutC) }]);
    await expect(group.current()).rejects.toMatchObject({
      code: "E_PROXY_DISAGREE",
      message: expect.stringContaining("the proxies route differently: lb1 {all: a b c}; lb2 {all: a b}"),
    });
  });

  it("capabilities are what every member offers; check() prefixes each member's lines", async () => {
    const lb2 = recording(all);
    const group = proxyGroup([{ label: "lb1", proxy: recording(all) }, { label: "lb2", proxy: { ...lb2, capabilities: { ...lb2.capabilities, timedSwitch: false } } }]);
    expect(group.capabilities.timedSwitch).toBe(false);
    expect(group.capabilities.versionPinning).toBe(true);
    expect(await group.check()).toEqual({ ok: true, details: ["[proxy lb1] fine", "[proxy lb2] fine"] });
  });

  it("a member whose check throws (its host key changed) fails the group's check with that error's code, naming the member", async () => {
    const lb2 = recording(all);
    lb2.check = async () => {
      throw new NodropError("E_SSH_HOSTKEY", "host key of lb2 (root@10.0.0.6:22) has CHANGED");
    };
    const group = proxyGroup([{ label: "lb1", proxy: recording(all) }, { label: "lb2", proxy: lb2 }]);
    const error = await rejected(group.check());
    expect(error).toMatchObject({ code: "E_SSH_HOSTKEY", message: "proxy lb2: host key of lb2 (root@10.0.0.6:22) has CHANGED" });
  });
});

describe("clockSpreadProblem", () => {
  it("offsets within the limit pass; further apart, the refusal says how far and how to fix it; a measurement too coarse to tell is refused too", async () => {
    const { clockSpreadProblem } = await import("./clock.js");
    expect(clockSpreadProblem([{ label: "lb1", clock: { offsetMs: 30, errorMs: 32 } }, { label: "lb2", clock: { offsetMs: 29, errorMs: 32 } }])).toBeUndefined();
    expect(clockSpreadProblem([{ label: "lb1", clock: { offsetMs: 0, errorMs: 1 } }, { label: "lb2", clock: { offsetMs: 5000, errorMs: 2 } }])).toBe(
      "the proxy hosts' clocks are 5000ms apart (lb1 +0ms ±1ms, lb2 +5000ms ±2ms), more than the 50ms within which they must agree to switch at one instant: synchronise them (NTP: chrony or systemd-timesyncd), then deploy again",
    );
    expect(clockSpreadProblem([{ label: "lb1", clock: { offsetMs: 0, errorMs: 1 } }, { label: "lb2", clock: { offsetMs: 0, errorMs: 250 } }])).toMatch(/cannot be compared closely enough .* a round trip to lb2 took more than 200ms every time/);
    expect(clockSpreadProblem([{ label: "lb1", clock: { offsetMs: 0, errorMs: 1 } }, { label: "lb2", clock: { offsetMs: 0, errorMs: 150 } }])).toBeUndefined();
    expect(clockSpreadProblem([{ label: "lb1", clock: { offsetMs: 0, errorMs: 1 } }])).toBeUndefined();
  });
});

describe("proxyGroup: putting members back", () => {
  it("a member whose put-back fails and that kept the change it had taken is on the new routing, never 'previous'", async () => {
    const [lb1, lb2] = [recording(all), recording(all)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }]);
    await group.current();
    lb2.failNext = { inForce: "previous", message: "nginx -t failed on lb2" };
    // lb1 takes the change, then refuses the put-back and restores its own file: the new routing.
    failSecondApply(lb1, new NodropError("E_PROXY_TEST", "nginx -t failed on lb1", { routingInForce: "previous" }));
    const error = await rejected(group.apply(withoutC, instances));
    expect(error.routingInForce).toBe("unknown");
    expect(error.message).toBe("proxy lb2: nginx -t failed on lb2; the proxies now route: lb1 the new routing, lb2 the previous routing");
  });

  it("a routing with a timed switch that has passed is put back settled (its target the default), not switched again", async () => {
    const [lb1, lb2] = [recording(all), recording(all)];
    const group = proxyGroup([{ label: "lb1", proxy: lb1 }, { label: "lb2", proxy: lb2 }]);
    const switched: Routing = { pools: { a: ["a"], b: ["b", "c"] }, defaultPool: "b", pins: {}, switchDefault: { to: "a", afterMs: 200 } };
    await group.apply(switched, instances);
    lb2.failNext = { inForce: "previous", message: "nginx -t failed on lb2" };
    await group.apply(singlePool(["a"]), instances).catch(() => undefined);
    expect(lb1.applied.at(-1)?.routing).toEqual({ pools: { a: ["a"], b: ["b", "c"] }, defaultPool: "a", pins: {} });
    expect(lb1.applied.at(-1)?.context?.switchAt).toBeUndefined();
  });
});

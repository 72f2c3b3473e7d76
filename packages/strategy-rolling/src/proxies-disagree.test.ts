import { type DeployOptions, type InstanceControl, type Proxy, type ProxyApplyResult, type Routing, deploy, proxyGroup, sameRouting, singlePool } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import type { RollingOptions } from "./options.js";
import { rollingStrategy } from "./rolling.js";

/**
 * A rolling deploy killed between two proxies' changes leaves them routing differently: lb1 took
 * batch 2 out (and batch 1 back), lb2 still has batch 1 out. The engine and a group of recording
 * proxies, every command and change written to one log in order. (Real nginx pairs:
 * examples/wsgi-fleet/test/proxies.test.ts.)
 */
function scene() {
  const log: string[] = [];
  const running = new Map([
    ["web-1", "v2"],
    ["web-2", "v1"],
    ["web-3", "v1"],
  ]);
  const member = (label: string, inForce: Routing): Proxy & { inForce: Routing } => {
    const proxy = {
      name: "nginx",
      capabilities: { versionPinning: true, timedSwitch: true, affinity: true },
      inForce,
      check: async () => ({ ok: true, details: [] }),
      current: async () => proxy.inForce,
      async apply(routing: Routing): Promise<ProxyApplyResult> {
        log.push(`${label} routes ${[...routing.pools.all!].join(",")}`);
        proxy.inForce = routing;
        return { generation: "2", confirmMs: 1, drainMs: 1 };
      },
    };
    return proxy;
  };
  const lb1 = member("lb1", singlePool(["web-1", "web-3"]));
  const lb2 = member("lb2", singlePool(["web-2", "web-3"]));
  const instances: InstanceControl[] = [...running.keys()].map((id, i) => ({
    spec: { id, host: "local", address: "127.0.0.1", port: 8011 + i },
    stop: async () => void (log.push(`stop ${id}`), running.delete(id)),
    update: async ({ version }) => void (log.push(`update ${id} ${version}`), running.set(id, version)),
    start: async () => void log.push(`start ${id}`),
  }));
  const options: DeployOptions<RollingOptions> = {
    version: "v2",
    instances,
    proxy: proxyGroup([
      { label: "lb1", proxy: lb1 },
      { label: "lb2", proxy: lb2 },
    ]),
    strategy: rollingStrategy(),
    strategyOptions: { batchSize: 1 },
    health: { probe: async (i) => (running.has(i.id) ? { ok: true, version: running.get(i.id), detail: "200" } : { ok: false, version: undefined, detail: "refused" }) },
    healthWait: { successes: 1, intervalMs: 1, deadlineMs: 50 },
  };
  return { log, lb1, lb2, options };
}

describe("proxies that route differently", () => {
  it("a deploy is refused, nothing touched, and the error names each proxy's routing and the way out", async () => {
    const { log, options } = scene();
    const report = await deploy(options);
    expect(report.error?.code).toBe("E_PROXY_DISAGREE");
    expect(report.error?.message).toContain("lb1 {all: web-1 web-3}; lb2 {all: web-2 web-3}");
    expect(report.error?.message).toContain("`nodrop resume` or `nodrop rollback` puts the first proxy's routing on every one first");
    expect(log).toEqual([]);
  });

  it("with reconcileProxies, the first change puts lb1's routing on both, before any instance is touched; then the deploy finishes", async () => {
    const { log, lb1, lb2, options } = scene();
    const report = await deploy({ ...options, reconcileProxies: true });
    expect(report.ok, report.error?.message).toBe(true);
    expect(log.slice(0, 2).sort()).toEqual(["lb1 routes web-1,web-3", "lb2 routes web-1,web-3"]);
    // web-2, which lb2 still routed to, is stopped only after lb2 took lb1's routing.
    expect(log.indexOf("stop web-2")).toBeGreaterThan(log.indexOf("lb2 routes web-1,web-3"));
    expect(sameRouting(lb1.inForce, lb2.inForce)).toBe(true);
    expect(lb1.inForce.pools.all).toEqual(["web-1", "web-2", "web-3"]);
    expect(report.instances.map((i) => [i.id, i.version, i.inPool])).toEqual([
      ["web-1", "v2", true],
      ["web-2", "v2", true],
      ["web-3", "v2", true],
    ]);
    expect(report.routes[0]?.why).toBe("every proxy onto the routing lb1 has (they routed differently)");
  });

  it("with reconcileProxies, when lb2 cannot take lb1's routing, the deploy stops there: no instance is touched, and the error names lb2", async () => {
    const { log, lb1, lb2, options } = scene();
    lb2.apply = async () => {
      log.push("lb2 unreachable");
      throw new Error("connect ECONNREFUSED 10.0.0.2:22");
    };
    const report = await deploy({ ...options, reconcileProxies: true });
    expect(report.ok).toBe(false);
    expect(report.error?.message).toMatch(/^proxy lb2: /);
    expect(report.error?.step).toBe("proxies: route");
    expect(log.filter((l) => /^(stop|update|start) /.test(l))).toEqual([]);
    // lb1 kept the routing it had; lb2 is as it was.
    expect(lb1.inForce.pools.all).toEqual(["web-1", "web-3"]);
    expect(lb2.inForce.pools.all).toEqual(["web-2", "web-3"]);
  });
});

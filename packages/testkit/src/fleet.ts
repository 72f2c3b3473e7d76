import type { ObservedInstance, ProxyCapabilities } from "@nodrop/core";

export interface FleetOfOptions {
  /** Hosts the instances are spread over, in turn (default 1: all on "host-1"). */
  readonly hosts?: number;
  /** Indexes of instances out of the pool (a failed earlier deploy left them out). */
  readonly outOfPool?: readonly number[];
}

/**
 * A fleet as preflight would observe it, one instance per version given: `undefined` is an
 * instance that did not answer its health check (unhealthy, version unknown). Ids are
 * `web-1`, `web-2`, ...; host `host-N` with address 10.0.0.N; ports from 8011 on each host.
 */
export function fleetOf(versions: readonly (string | undefined)[], options: FleetOfOptions = {}): ObservedInstance[] {
  const hosts = Math.max(1, options.hosts ?? 1);
  const out = new Set(options.outOfPool ?? []);
  return versions.map((version, index) => {
    const host = (index % hosts) + 1;
    return {
      id: `web-${index + 1}`,
      host: `host-${host}`,
      address: `10.0.0.${host}`,
      port: 8011 + Math.floor(index / hosts),
      version,
      healthy: version !== undefined,
      inPool: !out.has(index),
    };
  });
}

export const ALL_CAPABILITIES: ProxyCapabilities = { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true, split: true, traffic: true };
export const NO_CAPABILITIES: ProxyCapabilities = { versionPinning: false, drainsOldRouting: false, timedSwitch: false, affinity: false };

export interface FleetScenario {
  /** For messages: "4 instances on 2 hosts, all on v1, proxy with every capability". */
  readonly name: string;
  readonly instances: readonly ObservedInstance[];
  readonly proxy: ProxyCapabilities;
}

export interface FleetScenarioOptions {
  /** The version deployed (default "v2"). */
  readonly target?: string;
  /** The version the fleet runs (default "v1"). */
  readonly old?: string;
  /** An even older version, for mixed fleets (default "v0"). */
  readonly older?: string;
  /** Fleet sizes (default 1, 2, 4, 7). */
  readonly sizes?: readonly number[];
}

/**
 * The fleets the strategy suite plans for. Only fleets that pass the engine's preflight: every
 * instance in the pool is healthy, and at least one is in the pool. Instances out of the pool are
 * what a failed deploy leaves: down, reverted to the old version, or already on the target.
 */
export function fleetScenarios(options: FleetScenarioOptions = {}): FleetScenario[] {
  const target = options.target ?? "v2";
  const old = options.old ?? "v1";
  const older = options.older ?? "v0";
  const shapes: { name: string; versions: (n: number) => (string | undefined)[]; outOfPool?: (n: number) => number[]; min: number }[] = [
    { name: `all on ${old}`, versions: (n) => Array(n).fill(old), min: 1 },
    { name: `all on ${target} already`, versions: (n) => Array(n).fill(target), min: 1 },
    { name: `mixed ${older} and ${old}`, versions: (n) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? older : old)), min: 2 },
    { name: `some on ${target} already`, versions: (n) => Array.from({ length: n }, (_, i) => (i % 2 === 1 ? target : old)), min: 2 },
    // The last quarter (at least one) out of the pool; at least one instance stays in.
    { name: `on ${old}, some out of the pool and down`, versions: (n) => Array.from({ length: n }, (_, i) => (i >= n - outCount(n) ? undefined : old)), outOfPool: lastQuarter, min: 2 },
    { name: `on ${old}, some out of the pool on ${old}`, versions: (n) => Array(n).fill(old), outOfPool: lastQuarter, min: 2 },
    { name: `on ${old}, some out of the pool on ${target}`, versions: (n) => Array.from({ length: n }, (_, i) => (i >= n - outCount(n) ? target : old)), outOfPool: lastQuarter, min: 2 },
    { name: `all on ${target}, some out of the pool`, versions: (n) => Array(n).fill(target), outOfPool: lastQuarter, min: 2 },
  ];
  const capabilitySets = [
    { name: "a proxy with every capability", proxy: ALL_CAPABILITIES },
    { name: "a proxy with no capability", proxy: NO_CAPABILITIES },
  ];
  const scenarios: FleetScenario[] = [];
  for (const n of options.sizes ?? [1, 2, 4, 7]) {
    // Larger fleets spread over hosts, as strategies that split by host must handle.
    const hosts = n >= 7 ? 3 : n >= 4 ? 2 : 1;
    for (const shape of shapes) {
      if (n < shape.min) continue;
      const instances = fleetOf(shape.versions(n), { hosts, outOfPool: shape.outOfPool?.(n) ?? [] });
      for (const caps of capabilitySets) {
        scenarios.push({ name: `${n} instance${n === 1 ? "" : "s"}${hosts > 1 ? ` on ${hosts} hosts` : ""}, ${shape.name}, ${caps.name}`, instances, proxy: caps.proxy });
      }
    }
  }
  return scenarios;
}

/**
 * The instances with a spare port each (port + 1000): every other one live on its second slot (an
 * earlier surge moved it); `idle` says what the idle slot runs (undefined: it is free).
 */
export function twoSlots(instances: readonly ObservedInstance[], idle: (index: number) => string | undefined = () => undefined): ObservedInstance[] {
  return instances.map((i, index) => {
    const slots = [i.port, i.port + 1000] as const;
    const livePort = slots[index % 2]!;
    const version = idle(index);
    return { ...i, slots, livePort, idle: { port: slots[(index + 1) % 2]!, free: version === undefined, ...(version === undefined ? {} : { version }) } };
  });
}

/**
 * The same fleets with two slots per instance (ports 8011.. and 9011..), as a surge or blue-green
 * strategy sees them: half of each fleet live on its second slot (an earlier surge moved it), idle
 * slots free, plus fleets where some idle slots still run a process of the app, of an older version
 * (a deploy killed mid-surge) or of the target (old slots kept by keepOld, before a rollback). Proxies
 * with every capability (`poolSlots` included) and with none.
 */
export function slotFleetScenarios(options: FleetScenarioOptions = {}): FleetScenario[] {
  const target = options.target ?? "v2";
  const old = options.old ?? "v1";
  const withSlots = twoSlots;
  const leftovers: { name: string; idle: (index: number) => string | undefined }[] = [
    { name: "idle slots free", idle: () => undefined },
    { name: `every other idle slot still running ${old} (a killed deploy)`, idle: (index) => (index % 2 === 0 ? old : undefined) },
  ];
  const scenarios: FleetScenario[] = [];
  for (const base of fleetScenarios({ ...options, target, old })) {
    for (const leftover of leftovers) {
      const proxy = base.proxy.timedSwitch ? { ...base.proxy, poolSlots: true } : base.proxy;
      scenarios.push({ name: `${base.name}, two slots, ${leftover.name}`, instances: withSlots(base.instances, leftover.idle), proxy });
    }
  }
  // Kept old slots: the fleet on the target, every idle slot still running the version before it.
  for (const n of options.sizes ?? [1, 2, 4, 7]) {
    const instances = withSlots(fleetOf(Array(n).fill(old), { hosts: n >= 4 ? 2 : 1 }), () => target);
    scenarios.push({ name: `${n} instance${n === 1 ? "" : "s"} on ${old}, two slots, every idle slot still running ${target} (kept old slots: a rollback)`, instances, proxy: { ...ALL_CAPABILITIES, poolSlots: true } });
  }
  return scenarios;
}

const outCount = (n: number) => Math.max(1, Math.floor(n / 4));
const lastQuarter = (n: number) => Array.from({ length: outCount(n) }, (_, i) => n - 1 - i);

import { NodropError } from "./errors.js";
import type { InstanceSpec, Routing } from "./types.js";

/** One pool of the given instances; the shape nearly every steady state has. */
export function singlePool(ids: readonly string[], name = "all", pins: Record<string, string> = {}): Routing {
  return { pools: { [name]: [...ids] }, defaultPool: name, pins };
}

/** The instances any request can reach under this routing. */
export function servingInstances(routing: Routing): Set<string> {
  const pools = new Set([routing.defaultPool, ...Object.values(routing.pins), ...(routing.switchDefault ? [routing.switchDefault.to] : []), ...(routing.split ? [routing.split.to] : [])]);
  const ids = new Set<string>();
  for (const pool of pools) for (const id of Object.hasOwn(routing.pools, pool) ? (routing.pools[pool] ?? []) : []) ids.add(id);
  return ids;
}

/**
 * Whether a request can reach an instance under a routing: through the default pool, a default
 * switch or the pin of a version; the pin of a `staged` version (the one being deployed, or one an
 * interrupted deploy staged) only once the instance runs that version (`runs`), since a client
 * holds such a pin only after an instance on it served it. Own keys only: a version or pool named
 * `constructor` is a name like any other.
 */
export function reachesInstance(routing: Routing, staged: string | readonly string[], id: string, runs: string | undefined): boolean {
  const stagedVersions = typeof staged === "string" ? [staged] : staged;
  const pools = [routing.defaultPool, ...(routing.switchDefault ? [routing.switchDefault.to] : []), ...(routing.split ? [routing.split.to] : [])];
  for (const [pinned, pool] of Object.entries(routing.pins)) if (!stagedVersions.includes(pinned) || runs === pinned) pools.push(pool);
  return pools.some((pool) => Object.hasOwn(routing.pools, pool) && (routing.pools[pool]?.includes(id) ?? false));
}

/** Whether two routings route the same way (pool order and key order aside). */
export function sameRouting(a: Routing, b: Routing): boolean {
  const pools = (r: Routing) => Object.keys(r.pools).sort().map((name) => `${name}=${[...(r.pools[name] ?? [])].sort().join(",")}`).join(";");
  const pins = (r: Routing) => Object.keys(r.pins).sort().map((v) => `${v}>${r.pins[v]}`).join(";");
  const slots = (r: Routing) => Object.keys(r.slots ?? {}).sort().map((id) => `${id}:${r.slots?.[id]}`);
  const poolSlots = (r: Routing) =>
    Object.keys(r.poolSlots ?? {})
      .sort()
      .map((pool) => `${pool}=${Object.keys(r.poolSlots?.[pool] ?? {}).sort().map((id) => `${id}:${r.poolSlots?.[pool]?.[id]}`).join(",")}`);
  const split = (r: Routing) => (r.split ? [r.split.key, r.split.percent, r.split.to] : null);
  const extra = (r: Routing) => JSON.stringify([r.switchDefault?.to ?? null, r.affinity?.key ?? null, r.affinity ? [...r.affinity.ring].sort() : null, slots(r), poolSlots(r), split(r)]);
  return a.defaultPool === b.defaultPool && pools(a) === pools(b) && pins(a) === pins(b) && extra(a) === extra(b);
}

/** The routings, each once (by sameRouting), without any that is the same as one of `except`. */
export function distinctRoutings(routings: readonly Routing[], except: readonly Routing[] = []): Routing[] {
  const kept: Routing[] = [];
  for (const r of routings) if (![...except, ...kept].some((o) => sameRouting(o, r))) kept.push(r);
  return kept;
}

const POOL_NAME = /^[a-z][a-z0-9_]{0,31}$/;
const AFFINITY_KEY = /^\$(remote_addr|cookie_[A-Za-z0-9_]{1,64}|http_[a-z0-9_]{1,64})$/;
const PIN_VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A split's client key: up to three of $remote_addr, $cookie_NAME and $http_NAME, side by side. */
export const SPLIT_KEY = /^(?:\$(?:remote_addr|cookie_[A-Za-z0-9_]{1,64}|http_[a-z0-9_]{1,64})){1,3}$/;

/**
 * The port a routing serves an instance on: the slot it names, else `live` (the slot the instance
 * was live on before this routing), else the instance's first port. With `pool`, that pool's own
 * slot when the routing gives it one (`poolSlots`).
 */
export function routedPort(routing: Routing, spec: InstanceSpec, live?: number, pool?: string): number {
  const own = pool !== undefined && routing.poolSlots && Object.hasOwn(routing.poolSlots, pool) ? routing.poolSlots[pool] : undefined;
  const inPool = own && Object.hasOwn(own, spec.id) ? own[spec.id] : undefined;
  const named = routing.slots && Object.hasOwn(routing.slots, spec.id) ? routing.slots[spec.id] : undefined;
  return inPool ?? named ?? live ?? spec.port;
}

/** The pools a request can reach: the default, a default switch's target, and every pin's pool. */
function leadingPools(routing: Routing): { pool: string; pinned?: string }[] {
  return [
    { pool: routing.defaultPool },
    ...(routing.switchDefault ? [{ pool: routing.switchDefault.to }] : []),
    ...(routing.split ? [{ pool: routing.split.to }] : []),
    ...Object.entries(routing.pins).map(([pinned, pool]) => ({ pool, pinned })),
  ];
}

/**
 * Whether a request can reach an instance's slot on `port` under a routing: through a pool that
 * lists the instance on that port (see {@link reachesInstance} for which pools count). `runs` is the
 * version that slot runs; `live` the port the instance was served on before this routing.
 */
export function reachesSlot(routing: Routing, staged: readonly string[], spec: InstanceSpec, port: number, runs: string | undefined, live?: number): boolean {
  return leadingPools(routing).some(
    ({ pool, pinned }) =>
      (pinned === undefined || !staged.includes(pinned) || runs === pinned) &&
      Object.hasOwn(routing.pools, pool) &&
      (routing.pools[pool]?.includes(spec.id) ?? false) &&
      routedPort(routing, spec, live, pool) === port,
  );
}

/** Every address:port a routing serves, over all its pools (with slots, an instance's routed port in each). */
export function servedEndpoints(routing: Routing, specs: readonly InstanceSpec[], live: (id: string) => number | undefined = () => undefined): Set<string> {
  const endpoints = new Set<string>();
  for (const [pool, ids] of Object.entries(routing.pools)) {
    for (const id of ids) {
      const spec = specs.find((s) => s.id === id);
      if (spec) endpoints.add(endpoint(spec.address, routedPort(routing, spec, live(id), pool)));
    }
  }
  return endpoints;
}

/** "127.0.0.1:8011" or "[::1]:8011". */
export function endpoint(address: string, port: number): string {
  return `${address.includes(":") ? `[${address}]` : address}:${port}`;
}

/**
 * The routing with every instance that has slots listed under `slots` (those it leaves out stay on
 * `live(id)`), so that what the proxy records says which slot each instance is served on.
 */
export function withSlots(routing: Routing, specs: readonly InstanceSpec[], live: (id: string) => number | undefined): Routing {
  const slotted = specs.filter((s) => s.slots !== undefined);
  if (slotted.length === 0) return routing;
  return { ...routing, slots: Object.fromEntries(slotted.map((s) => [s.id, routedPort(routing, s, live(s.id))])) };
}

/**
 * Checks a routing before any proxy sees it: pools are non-empty, named safely, list known
 * instances, and every pool named by the default or a pin exists (nginx -t would not notice).
 * Known instances given as specs also check `slots`: each names one of that instance's own ports.
 */
export function validateRouting(routing: Routing, known: ReadonlySet<string> | readonly InstanceSpec[]): void {
  const specs = Array.isArray(known) ? (known as readonly InstanceSpec[]) : undefined;
  const knownIds: ReadonlySet<string> = specs ? new Set(specs.map((s) => s.id)) : (known as ReadonlySet<string>);
  const problems: string[] = [];
  const pools = Object.entries(routing.pools);
  if (pools.length === 0) problems.push("no pools");
  for (const [name, ids] of pools) {
    if (!POOL_NAME.test(name)) problems.push(`pool name "${name}" must match ${POOL_NAME}`);
    if (ids.length === 0) problems.push(`pool "${name}" is empty`);
    if (new Set(ids).size !== ids.length) problems.push(`pool "${name}" lists an instance twice`);
    for (const id of ids) if (!knownIds.has(id)) problems.push(`pool "${name}" names unknown instance "${id}"`);
  }
  if (!Object.hasOwn(routing.pools, routing.defaultPool)) problems.push(`default pool "${routing.defaultPool}" is not defined`);
  if (routing.affinity) {
    const ring = new Set(routing.affinity.ring);
    if (!AFFINITY_KEY.test(routing.affinity.key)) problems.push(`affinity key "${routing.affinity.key}" must be $remote_addr, $cookie_NAME or $http_NAME`);
    for (const id of routing.affinity.ring) if (!knownIds.has(id)) problems.push(`affinity ring names unknown instance "${id}"`);
    for (const [name, ids] of pools) for (const id of ids) if (!ring.has(id)) problems.push(`pool "${name}" lists "${id}", which is not on the affinity ring`);
  }
  if (routing.split) problems.push(...splitProblems(routing));
  if (routing.switchDefault && !Object.hasOwn(routing.pools, routing.switchDefault.to)) {
    problems.push(`default switch to "${routing.switchDefault.to}" names a pool that is not defined`);
  }
  for (const [version, pool] of Object.entries(routing.pins)) {
    if (!PIN_VERSION.test(version)) problems.push(`pinned version "${version}" is not a safe version string`);
    if (!Object.hasOwn(routing.pools, pool)) problems.push(`pin ${version} -> "${pool}" names a pool that is not defined`);
  }
  const slotProblems = (entries: Readonly<Record<string, number>>, where: string) => {
    for (const [id, port] of Object.entries(entries)) {
      const spec = specs?.find((s) => s.id === id);
      if (!knownIds.has(id)) problems.push(`${where} name unknown instance "${id}"`);
      else if (!Number.isInteger(port)) problems.push(`slot of "${id}" is not a port: ${JSON.stringify(port)}`);
      else if (specs && !spec?.slots?.includes(port)) problems.push(`slot ${port} of "${id}" is not one of its ports (${spec?.slots?.join(", ") ?? "it has one slot"})`);
    }
  };
  slotProblems(routing.slots ?? {}, "slots");
  for (const [pool, entries] of Object.entries(routing.poolSlots ?? {})) {
    if (!Object.hasOwn(routing.pools, pool)) problems.push(`poolSlots name pool "${pool}", which is not defined`);
    else for (const id of Object.keys(entries)) if (!routing.pools[pool]?.includes(id)) problems.push(`poolSlots of "${pool}" name "${id}", which that pool does not list`);
    slotProblems(entries, `poolSlots of "${pool}"`);
  }
  if (problems.length > 0) throw new NodropError("E_PLAN", `invalid routing: ${problems.join("; ")}`);
}

/**
 * Why a routing read back from a proxy names slots that are not its instances' own ports (the file
 * it came from is anyone's to edit on the proxy host), or undefined when they all are.
 */
export function routingSlotProblem(routing: Routing, specs: readonly InstanceSpec[]): string | undefined {
  if (!routing.slots && !routing.poolSlots) return undefined;
  try {
    // Pools a routing left empty are another matter (the proxy's own check reports them).
    validateRouting({ ...routing, pools: Object.fromEntries(Object.entries(routing.pools).filter(([, ids]) => ids.length > 0)) }, specs);
    return undefined;
  } catch (error) {
    return `the routing in force does not match the config: ${(error as Error).message.replace(/^invalid routing: /, "")}`;
  }
}

/** What is wrong with a routing's split: its key, its share (0 to 100 exclusive, two decimals at most: nginx's precision), its pool. */
function splitProblems(routing: Routing): string[] {
  const split = routing.split!;
  const problems: string[] = [];
  if (typeof split.key !== "string" || !SPLIT_KEY.test(split.key)) problems.push(`split key "${String(split.key)}" must be up to three of $remote_addr, $cookie_NAME and $http_NAME`);
  const hundredths = Math.round(split.percent * 100);
  if (typeof split.percent !== "number" || !(split.percent > 0 && split.percent < 100) || Math.abs(hundredths - split.percent * 100) > 1e-6) {
    problems.push(`split percent ${String(split.percent)} must be above 0 and below 100, with at most two decimals`);
  }
  if (!Object.hasOwn(routing.pools, split.to)) problems.push(`split to "${split.to}" names a pool that is not defined`);
  if (split.to === routing.defaultPool) problems.push(`split to "${split.to}" is the default pool`);
  if (routing.switchDefault || routing.affinity) problems.push("a split cannot be combined with a default switch or affinity");
  return problems;
}

import { NodropError, type RoutingInForce, toNodropError } from "./errors.js";
import { routedPort, sameRouting } from "./routing.js";
import type { ClockOffset } from "./clock.js";
import { addCounts, validCounts } from "./traffic.js";
import type { Proxy, ProxyApplyResult, ProxyCapabilities, ProxyCheck, ProxyContext, ProxyInstance, Routing, TrafficCounts, TrafficWindow } from "./types.js";

/** One proxy of a group, named by what the report calls it (its host). */
export interface ProxyMember {
  readonly label: string;
  readonly proxy: Proxy;
}

/** Several proxies in front of one fleet, driven as one (the engine sees a single Proxy). */
export interface ProxyGroup extends Proxy {
  readonly members: readonly ProxyMember[];
  /**
   * Every member host's clock against this machine's (each member's clock()), kept for the timed
   * switches that follow: each member gets the one instant on its own host's clock. Throws
   * E_PREFLIGHT naming a member that cannot say.
   */
  measureClocks(context?: ProxyContext): Promise<{ label: string; clock: ClockOffset }[]>;
}

/** Whether a proxy is a group of several (status shows each member's routing). */
export function isProxyGroup(proxy: Proxy): proxy is ProxyGroup {
  return Array.isArray((proxy as Partial<ProxyGroup>).members);
}

/** What one member's current() said: its routing, or why it could not say. */
export interface MemberRouting {
  readonly label: string;
  readonly routing: Routing | undefined;
  readonly error?: string;
}

/**
 * Every member's traffic, summed by endpoint (each proxy serves its own share of the clients). The
 * group's cursor holds each member's, in member order.
 */
async function groupTraffic(members: readonly ProxyMember[], cursor: string | undefined, context?: ProxyContext): Promise<TrafficWindow> {
  let cursors: unknown[] = [];
  if (cursor !== undefined) {
    try {
      cursors = JSON.parse(cursor) as unknown[];
    } catch {
      cursors = [];
    }
    if (!Array.isArray(cursors) || cursors.length !== members.length || !cursors.every((c) => typeof c === "string")) {
      throw new NodropError("E_PROXY_SETUP", `traffic cursor for ${members.length} proxies is not theirs: ${cursor.slice(0, 80)}`);
    }
  }
  const windows = await Promise.all(members.map((m, i) => m.proxy.traffic!(cursors[i] as string | undefined, context)));
  const endpoints: Record<string, TrafficCounts> = {};
  const unattributed = { requests: 0, errors: 0 };
  for (const w of windows) {
    // A member's malformed counts (a plugin's) are left out, as the gate leaves them out of one proxy's.
    for (const [where, counts] of Object.entries(w.endpoints)) if (validCounts(counts)) endpoints[where] = Object.hasOwn(endpoints, where) ? addCounts(endpoints[where]!, counts) : counts;
    unattributed.requests += Number.isSafeInteger(w.unattributed?.requests) ? w.unattributed!.requests : 0;
    unattributed.errors += Number.isSafeInteger(w.unattributed?.errors) ? w.unattributed!.errors : 0;
  }
  return { cursor: JSON.stringify(windows.map((w) => w.cursor)), endpoints, unattributed };
}

/** A member's part of a change: the routing it ended on. */
interface MemberOutcome {
  readonly label: string;
  readonly inForce: RoutingInForce;
  readonly result?: ProxyApplyResult;
  readonly error?: NodropError;
}

/**
 * Drives several proxies (an HA pair, DNS round robin) as one. Every change goes to all of them at
 * once and counts only when each has confirmed it; a drain ends when every member's has. When
 * one refuses or cannot be reached, the members that took the change are put back on the routing
 * before it, so that all of them route alike, and the error names the member that failed and says
 * what is in force: previous when every member is back, unknown when any could not say or be put
 * back. A timed switch gets one instant for all, given to each member on its own host's clock
 * (ProxyContext.switchAt) from the offsets measureClocks() found. current() answers only when every member agrees.
 */
export function proxyGroup(members: readonly ProxyMember[]): ProxyGroup {
  if (members.length === 0) throw new Error("internal: a proxy group needs at least one member");
  const state = new GroupState();
  const capabilities = Object.freeze(Object.fromEntries(capabilityFlags(members).map((flag) => [flag, members.every((m) => m.proxy.capabilities[flag] === true)]))) as unknown as ProxyCapabilities;
  const measureClocks = async (context?: ProxyContext): Promise<{ label: string; clock: ClockOffset }[]> => {
    const blind = members.filter((m) => !m.proxy.clock).map((m) => m.label);
    if (blind.length > 0) throw new NodropError("E_PREFLIGHT", `a switch at one instant on every proxy needs each one's clock, and ${blind.join(", ")} cannot report ${blind.length === 1 ? "its" : "theirs"} (the adapter has no clock())`);
    const clocks = await Promise.all(members.map(async (m) => ({ label: m.label, clock: await m.proxy.clock!(context) })));
    state.clocksMeasured(clocks.map((c) => c.clock.offsetMs));
    return clocks;
  };
  return {
    name: members[0]!.proxy.name,
    capabilities,
    members,
    check: (context) => checkAll(members, context),
    async current(context) {
      const routings = await currentOfEach(members, context);
      const agreed = agreedRouting(routings);
      state.inForce(agreed);
      return agreed;
    },
    measureClocks,
    async alsoInForce(context) {
      const each = await Promise.all(members.map((m) => m.proxy.alsoInForce?.(context) ?? []));
      return each.flat();
    },
    ...(capabilities.traffic ? { traffic: (cursor: string | undefined, context?: ProxyContext) => groupTraffic(members, cursor, context) } : {}),
    async apply(routing, instances, context = {}) {
      // One instant, on each member's own clock (measured at preflight, or now).
      const offsets = routing.switchDefault ? (state.clocks() ?? (await measureClocks(context)).map((c) => c.clock.offsetMs)) : [];
      // Far enough ahead for the slowest member's change (its write, test and reload, over its link).
      const lead = routing.switchDefault ? Math.max(...members.map((m) => m.proxy.switchDelay?.(routing.switchDefault!.afterMs) ?? routing.switchDefault!.afterMs)) : 0;
      const instant = routing.switchDefault ? Date.now() + lead : undefined;
      const contextOf = (index: number): ProxyContext => (instant === undefined ? context : { ...context, switchAt: Math.round(instant + offsets[index]!) });
      const outcomes = await Promise.all(members.map((m, index) => applyOne(m, routing, instances, contextOf(index))));
      const failed = outcomes.filter((o) => o.error);
      // A member's background drain is of no use once the change is undone; it must not go unhandled.
      if (failed.length > 0) for (const o of outcomes) o.result?.drained?.catch(() => undefined);
      if (failed.length === 0) {
        state.inForce(routing);
        return combined(outcomes.map((o) => o.result!));
      }
      const previous = settledRouting(state.previous());
      const restored = await restore(members, outcomes, previous && { routing: previous, instances: instancesFor(previous, instances) }, context);
      throw groupFailure(failed, restored);
    },
    async initialize(routing, instances, context) {
      const done = await Promise.all(members.map(async (m) => (m.proxy.initialize ? m.proxy.initialize(routing, instances, context) : undefined)));
      const wrote = done.filter((d) => d !== undefined);
      return { wrote: wrote.some((d) => d.wrote), file: wrote.map((d) => d.file).join(", "), instructions: members.flatMap((m, i) => (done[i]?.instructions ?? []).map((line) => `[proxy ${m.label}] ${line}`)) };
    },
    async dispose() {
      await Promise.allSettled(members.map((m) => m.proxy.dispose?.()));
    },
  };
}

/** The routing every member confirmed last (or agreed on when asked): where a failed change goes back to. */
class GroupState {
  #routing: Routing | undefined;
  #offsets: number[] | undefined;

  clocksMeasured(offsets: number[]): void {
    this.#offsets = offsets;
  }

  clocks(): number[] | undefined {
    return this.#offsets;
  }

  /** A routing every member has: read back from all of them, or confirmed by each. */
  inForce(routing: Routing | undefined): void {
    if (routing) this.#routing = routing;
  }

  previous(): Routing | undefined {
    return this.#routing;
  }
}

/**
 * A routing as it stands once its timed switch has passed (the group applies one only to return
 * after its instant): its switch's target as the default. Put back as it was, it would switch again,
 * each proxy at an instant of its own, after the old default had answered once more.
 */
export function settledRouting(routing: Routing | undefined): Routing | undefined {
  if (!routing?.switchDefault) return routing;
  const { switchDefault, ...rest } = routing;
  return { ...rest, defaultPool: switchDefault.to };
}

/** The instances as `routing` serves them: each on the slot it names (its first slot otherwise), with that slot's version. */
function instancesFor(routing: Routing, instances: readonly ProxyInstance[]): ProxyInstance[] {
  return instances.map((i) => {
    const port = routedPort(routing, { ...i, port: i.slots?.[0] ?? i.port });
    return { ...i, port, version: i.versions?.[String(port)] ?? (port === i.port ? i.version : undefined) };
  });
}

function capabilityFlags(members: readonly ProxyMember[]): (keyof ProxyCapabilities)[] {
  return [...new Set(members.flatMap((m) => Object.keys(m.proxy.capabilities)))] as (keyof ProxyCapabilities)[];
}

/**
 * Every member's check, each line naming its member. A member whose check throws (its host cannot
 * be reached, its host key changed) fails the whole check with that error, its code kept and the
 * member named, as a single proxy's would.
 */
async function checkAll(members: readonly ProxyMember[], context: Parameters<Proxy["check"]>[0]): Promise<ProxyCheck> {
  const checks = await Promise.allSettled(members.map((m) => m.proxy.check(context)));
  const thrown = checks.findIndex((c) => c.status === "rejected");
  if (thrown >= 0) {
    const error = toNodropError((checks[thrown] as PromiseRejectedResult).reason, "E_PROXY_SETUP");
    throw new NodropError(error.code, `proxy ${members[thrown]!.label}: ${error.message}`, { cause: error });
  }
  const results = checks.map((c) => (c as PromiseFulfilledResult<ProxyCheck>).value);
  return { ok: results.every((c) => c.ok), details: members.flatMap((m, i) => results[i]!.details.map((line) => `[proxy ${m.label}] ${line}`)) };
}

/** Each member's routing in force, or why it could not say. */
export async function currentOfEach(members: readonly ProxyMember[], context?: ProxyContext): Promise<MemberRouting[]> {
  return Promise.all(
    members.map(async (m): Promise<MemberRouting> => {
      try {
        return { label: m.label, routing: await m.proxy.current(context) };
      } catch (error) {
        return { label: m.label, routing: undefined, error: toNodropError(error, "E_PROXY_RELOAD").message.split("\n")[0] };
      }
    }),
  );
}

/** The routing all members have, or an error saying which ones differ (preflight refuses then, resume included). */
export function agreedRouting(routings: readonly MemberRouting[]): Routing | undefined {
  const broken = routings.filter((r) => r.error !== undefined);
  if (broken.length > 0) throw new NodropError("E_PROXY_RELOAD", `cannot read the routing in force on ${broken.map((r) => `proxy ${r.label} (${r.error})`).join(", ")}`);
  const first = routings[0]!.routing;
  const differ = routings.some((r) => (r.routing === undefined) !== (first === undefined) || (r.routing && first && !sameRouting(r.routing, first)));
  if (!differ) return first;
  throw new NodropError(
    "E_PROXY_DISAGREE",
    `the proxies route differently: ${routings.map((r) => `${r.label} ${r.routing ? describeRouting(r.routing) : "has no routing of nodrop's"}`).join("; ")}; a deploy starts only from one routing on all of them: \`nodrop resume\` or \`nodrop rollback\` puts the first proxy's routing on every one first`,
  );
}

/** A routing in one line: its pools and, with slots, the ports served (status and the disagreement error show it). */
export function describeRouting(routing: Routing): string {
  return `{${Object.entries(routing.pools).map(([pool, ids]) => `${pool}: ${ids.join(" ")}`).join("; ")}}${routing.slots ? ` on slots ${Object.values(routing.slots).join(",")}` : ""}`;
}

async function applyOne(member: ProxyMember, routing: Routing, instances: readonly ProxyInstance[], context: ProxyContext): Promise<MemberOutcome> {
  try {
    return { label: member.label, inForce: "new", result: await member.proxy.apply(routing, instances, context) };
  } catch (error) {
    const failure = toNodropError(error, "E_PROXY_RELOAD");
    return { label: member.label, inForce: failure.routingInForce ?? "unknown", error: failure };
  }
}

/** One result for the group: the slowest member's times, every member's warnings, one drain for all. */
function combined(results: readonly ProxyApplyResult[]): ProxyApplyResult {
  const drains = results.map((r) => r.drained).filter((d): d is NonNullable<ProxyApplyResult["drained"]> => d !== undefined);
  const warnings = results.flatMap((r) => r.warnings ?? []);
  const drained = drains.length === 0 ? undefined : Promise.all(drains).then((all) => ({ drainMs: Math.max(...all.map((d) => d.drainMs)), cut: all.reduce((sum, d) => sum + (d.cut ?? 0), 0) }));
  drained?.catch(() => undefined);
  return {
    generation: results.map((r) => r.generation).join("+"),
    confirmMs: Math.max(...results.map((r) => r.confirmMs)),
    drainMs: Math.max(...results.map((r) => r.drainMs)),
    cut: results.reduce((sum, r) => sum + (r.cut ?? 0), 0),
    ...(drained ? { drained } : {}),
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}

/**
 * After a change some members failed: puts the members that took it (and those that cannot say)
 * back on the previous routing, and says what each ended on.
 */
async function restore(members: readonly ProxyMember[], outcomes: readonly MemberOutcome[], previous: { routing: Routing; instances: readonly ProxyInstance[] } | undefined, context: ProxyContext): Promise<MemberOutcome[]> {
  return Promise.all(
    outcomes.map(async (outcome, index): Promise<MemberOutcome> => {
      if (outcome.inForce === "previous") return outcome;
      // Without a routing before (nodrop never wrote one), there is nothing to put back.
      if (!previous) return { ...outcome, inForce: outcome.inForce === "new" ? "new" : "unknown" };
      try {
        await members[index]!.proxy.apply(previous.routing, previous.instances, { signal: context.signal, log: context.log });
        return { ...outcome, inForce: "previous" };
      } catch (error) {
        // The adapter speaks of the put-back: its "previous" is where the member was before it
        // (the change it had taken), its "new" the group's previous routing.
        const failure = toNodropError(error, "E_PROXY_RELOAD");
        const inForce: RoutingInForce = failure.routingInForce === "new" ? "previous" : failure.routingInForce === "previous" ? outcome.inForce : "unknown";
        return { ...outcome, inForce, error: outcome.error ?? failure };
      }
    }),
  );
}

/** The group's error: the first failed member's, naming it, with what every member ended on. */
function groupFailure(failed: readonly MemberOutcome[], ended: readonly MemberOutcome[]): NodropError {
  const first = failed[0]!.error!;
  const states = new Set(ended.map((o) => o.inForce));
  const inForce: RoutingInForce = states.size === 1 ? [...states][0]! : "unknown";
  const failedLabels = new Set(failed.map((o) => o.label));
  const others = ended.filter((o) => !failedLabels.has(o.label));
  const tail =
    inForce === "previous"
      ? others.length > 0
        ? `; ${others.map((o) => o.label).join(", ")} ${others.length === 1 ? "was" : "were"} put back on the previous routing`
        : ""
      : `; the proxies now route: ${ended.map((o) => `${o.label} ${o.inForce === "unknown" ? "unknown" : `the ${o.inForce} routing`}`).join(", ")}`;
  const [line, ...rest] = first.message.split("\n");
  return new NodropError(first.code, [`proxy ${failed.map((o) => o.label).join(", ")}: ${line}${tail}`, ...rest].join("\n"), { routingInForce: inForce, cause: first });
}

import type { DeployOptions } from "./deploy-options.js";
import { NodropError, toNodropError } from "./errors.js";
import { currentOfEach, describeRouting, isProxyGroup, settledRouting } from "./proxy-group.js";
import { distinctRoutings, routingSlotProblem } from "./routing.js";
import type { PlanPhase, Routing } from "./types.js";

/**
 * What preflight plans from: the routing in force and, when the proxies of a group route
 * differently (a deploy died between their changes) and the caller reconciles them, the routings
 * the other members have, counted as possibly in force until the first change.
 */
export interface RoutingRead {
  /** Undefined when the proxy holds no routing of nodrop's (every instance then counts as serving). */
  readonly routing: Routing | undefined;
  /** Other routings some member has in force (empty when they agree). */
  readonly others: readonly Routing[];
  /** When they disagreed: the phase that puts `routing` on every member before anything else changes, and a note saying so. */
  readonly reconcile?: { readonly phase: PlanPhase; readonly note: string };
}

/**
 * Reads the routing in force. With `reconcileProxies` (resume and rollback), members of a group
 * that disagree are not refused: the plan starts from the first member's routing (the proxy the
 * config names first, which holds the lock and the journal), every other member's counts as
 * possibly in force (no instance one of them reaches is stopped before the first change has
 * drained it), and a first phase puts the first member's on all of them. A member whose routing
 * cannot be read is still refused: nodrop cannot tell what it would have to drain.
 *
 * Whatever the command, a proxy that keeps on record the routing before a change whose reload was
 * never confirmed (`alsoInForce`: a deploy killed between writing the file and the reload) gets the
 * same treatment: that routing counts as possibly in force, and the first phase puts the file's into
 * effect, since nginx may still route by the one before.
 */
export async function readRoutingInForce(options: Pick<DeployOptions<unknown>, "proxy" | "instances" | "signal" | "reconcileProxies">): Promise<RoutingRead> {
  const read = await readAgreed(options);
  const unconfirmed = await readUnconfirmed(options, read.routing);
  if (unconfirmed.length === 0) return read;
  // A timed switch in the file has passed by now, whether or not nginx loaded it: put in effect as it stands.
  const routing = settledRouting(read.routing)!;
  const others = distinctRoutings([...read.others, ...unconfirmed, read.routing!], [routing]);
  const note = "a change was written to the proxy but its reload never confirmed (a deploy died in between): the first change puts the routing in the file into effect, and nothing stops before the routing before it has drained";
  return {
    routing,
    others,
    reconcile: read.reconcile
      ? { ...read.reconcile, note: `${read.reconcile.note}; ${note}` }
      : { phase: proxiesPhase(routing, "the routing in the proxy's file put into effect (a change to it was never confirmed)"), note },
  };
}

/** The first phase of a plan whose proxies may route by more than one routing: `routing` on all of them. */
function proxiesPhase(routing: Routing, why: string): PlanPhase {
  return { name: "proxies", instances: [], onFailure: "revert", steps: [{ kind: "route", routing, why }], added: "reconcile" };
}

/** Routings a change written but never confirmed may have left in force (the proxy keeps them on record), each checked like the file's. */
async function readUnconfirmed(options: Pick<DeployOptions<unknown>, "proxy" | "instances" | "signal">, routing: Routing | undefined): Promise<Routing[]> {
  if (!routing || !options.proxy.alsoInForce) return [];
  const specs = options.instances.map((i) => i.spec);
  const found = distinctRoutings(await options.proxy.alsoInForce({ signal: options.signal }), [routing]);
  for (const r of found) {
    const problem = routingSlotProblem(r, specs);
    if (problem) throw new NodropError("E_PREFLIGHT", `refusing to deploy: on proxy ${options.proxy.name}, the routing before an unconfirmed change: ${problem}`);
  }
  return found;
}

/** The routing every proxy has, or (reconciling) the first one's with the others'. */
async function readAgreed(options: Pick<DeployOptions<unknown>, "proxy" | "instances" | "signal" | "reconcileProxies">): Promise<RoutingRead> {
  const { proxy, signal } = options;
  try {
    return { routing: await proxy.current({ signal }), others: [] };
  } catch (error) {
    if (!options.reconcileProxies || !isProxyGroup(proxy) || toNodropError(error, "E_PROXY_RELOAD").code !== "E_PROXY_DISAGREE") throw error;
    const each = await currentOfEach(proxy.members, { signal });
    const missing = each.filter((m) => m.routing === undefined || m.error !== undefined);
    if (missing.length > 0) throw error;
    const specs = options.instances.map((i) => i.spec);
    for (const m of each) {
      const problem = routingSlotProblem(m.routing!, specs);
      if (problem) throw new NodropError("E_PREFLIGHT", `refusing to deploy: on proxy ${m.label}, ${problem}`);
    }
    const [first, ...rest] = each;
    // A timed switch that the first member holds has passed by now: it is put back as it stands.
    const routing = settledRouting(first!.routing!)!;
    const others = distinctRoutings([first!.routing!, ...rest.map((m) => m.routing!)], [routing]);
    return {
      routing,
      others,
      reconcile: {
        phase: proxiesPhase(routing, `every proxy onto the routing ${first!.label} has (they routed differently)`),
        note: `the proxies route differently (${each.map((m) => `${m.label} ${describeRouting(m.routing!)}`).join("; ")}): the first change puts ${first!.label}'s routing on all of them, and nothing stops before their old routings have drained`,
      },
    };
  }
}

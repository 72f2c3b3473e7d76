import { readFile } from "node:fs/promises";
import { type Routing, servingInstances } from "@nodrop/core";

/** The routing nodrop's include file says is in force (the line the nginx adapter writes). */
export function routingIn(text: string): Routing | undefined {
  const line = /^# nodrop-routing: (\{.*\})$/m.exec(text)?.[1];
  return line === undefined ? undefined : (JSON.parse(line) as Routing);
}

/**
 * How many instance endpoints (an instance on one of its slots) a routing sends requests to:
 * through the default pool, a default switch's target, a canary's split or a version pin. Blue-green's switch
 * routing counts both slots of each instance, since either may answer until the switch's instant.
 * `pinHolders` says whether any client can hold a version's pin yet (one gets it with a first
 * answer of that version): half-split pins half A to the new version before A restarts, and nobody
 * reaches A that way until it has served someone.
 */
export function servedEndpoints(routing: Routing, pinHolders: (version: string) => boolean = () => true): number {
  const pinned = Object.entries(routing.pins).flatMap(([version, pool]) => (pinHolders(version) ? [pool] : []));
  // A canary's split sends its share to its pool from the first reload: it serves whoever holds a pin.
  const pools = new Set([routing.defaultPool, ...(routing.switchDefault ? [routing.switchDefault.to] : []), ...(routing.split ? [routing.split.to] : []), ...pinned]);
  const endpoints = new Set<string>();
  for (const pool of pools) {
    const own = routing.poolSlots?.[pool];
    // Without slots an instance has one endpoint: its id alone names it.
    for (const id of Object.hasOwn(routing.pools, pool) ? (routing.pools[pool] ?? []) : []) endpoints.add(`${id}:${own?.[id] ?? routing.slots?.[id] ?? ""}`);
  }
  return endpoints.size;
}

/** A routing the include file held from `atMs` on (the sampler's clock). */
export interface RoutingChange {
  atMs: number;
  routing: Routing;
}

export interface RoutingSamples {
  samples: number;
  /** Each distinct routing seen, in order. */
  routings: Routing[];
  /** The fewest instances any sampled routing served. */
  fewest: number;
  /** The same routings with when each was first seen. */
  changes: RoutingChange[];
}

export interface SampleRoutingOptions {
  /** The samples' clock (default performance.now()). */
  clock?: () => number;
}

/** Reads the include file every 10 ms until stopped: each distinct routing seen (and when), and the fewest instances any of them served. */
export function sampleRouting(file: string, options: SampleRoutingOptions = {}): { stop: () => Promise<RoutingSamples> } {
  const clock = options.clock ?? (() => performance.now());
  let running = true;
  const changes: RoutingChange[] = [];
  let samples = 0;
  let fewest = Number.POSITIVE_INFINITY;
  const loop = (async () => {
    while (running) {
      const atMs = clock();
      const routing = parsed(await readFile(file, "utf8").catch(() => ""));
      if (routing) {
        samples += 1;
        fewest = Math.min(fewest, servingInstances(routing).size);
        if (JSON.stringify(changes.at(-1)?.routing) !== JSON.stringify(routing)) changes.push({ atMs, routing });
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { samples, routings: changes.map((c) => c.routing), fewest, changes };
    },
  };
}

/** The routing in the text, or undefined when there is none or it cannot be read (a sample is skipped, the sampler goes on). */
function parsed(text: string): Routing | undefined {
  try {
    return routingIn(text);
  } catch {
    return undefined;
  }
}

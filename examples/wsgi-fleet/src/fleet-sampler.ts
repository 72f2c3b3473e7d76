// What the fleet itself does during a benchmark deploy: how many instance endpoints the routing in
// force serves, and how much memory the fleet's gunicorn processes hold (two slots cost a second
// set of processes for a while: this shows how much and for how long).
import { readdir, readFile } from "node:fs/promises";
import { sleep } from "@nodrop/core";
import type { RequestRecord } from "@nodrop/loadgen";
import { type RoutingChange, sampleRouting, servedEndpoints } from "./routing-sampler.js";

/** The number of endpoints served from `atMs` on, until the next sample. */
export interface ServingSample {
  atMs: number;
  count: number;
}

export interface MemorySample {
  atMs: number;
  /** Summed resident memory of the fleet's gunicorn processes (masters and workers). */
  rssKb: number;
}

export interface FleetSamples {
  /** The routings in force over time; empty when no include file was sampled. */
  changes: RoutingChange[];
  memory: MemorySample[];
}

export interface FleetSamplerOptions {
  /** Samples' clock, e.g. ms since the load started (default performance.now()). */
  clock?: () => number;
  /** nodrop's include file: its routing is sampled when given. */
  includeFile?: string;
  /** Counts gunicorn processes whose command line contains this directory (fleet.dir, or the test hosts' dir). */
  dir: string;
  /** Default 100 ms. */
  memoryIntervalMs?: number;
}

/** Samples the fleet until stopped. */
export function sampleFleet(options: FleetSamplerOptions): { stop: () => Promise<FleetSamples> } {
  const clock = options.clock ?? (() => performance.now());
  const routing = options.includeFile === undefined ? undefined : sampleRouting(options.includeFile, { clock });
  const memory: MemorySample[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const atMs = clock();
      memory.push({ atMs, rssKb: await gunicornRssKb(options.dir) });
      await sleep(options.memoryIntervalMs ?? 100);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { changes: (await routing?.stop())?.changes ?? [], memory };
    },
  };
}

/**
 * The summed VmRSS of every process whose command line has "gunicorn" and `dir` in it, read from
 * /proc (no `ps` started every 100 ms on a machine the benchmark already keeps busy). gunicorn's
 * workers keep the master's command line (no setproctitle), and fleet.sh passes the instance's
 * directory under `dir` as --pid, so both count. Shared pages count in each process.
 */
export async function gunicornRssKb(dir: string): Promise<number> {
  const needle = dir.endsWith("/") ? dir : `${dir}/`;
  const pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name));
  const sizes = await Promise.all(
    pids.map(async (pid) => {
      // A process may exit between readdir and the reads: it then counts for nothing.
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).replaceAll("\0", " ");
      if (!cmdline.includes("gunicorn") || !cmdline.includes(needle)) return 0;
      const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
      return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0);
    }),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

/** When each version first answered a request successfully (ms, the records' clock): from then on a client can hold its pin. */
export function firstAnswers(records: readonly RequestRecord[]): Map<string, number> {
  const first = new Map<string, number>();
  for (const r of records) {
    if (r.version === undefined || r.error !== undefined || r.status < 200 || r.status > 299) continue;
    first.set(r.version, Math.min(first.get(r.version) ?? Number.POSITIVE_INFINITY, r.end));
  }
  return first;
}

/**
 * The endpoints served over time: each routing's count from when it was seen, and again from each
 * version's first answer, when the pin of that version starts to carry clients.
 */
export function servingOverTime(changes: readonly RoutingChange[], first: ReadonlyMap<string, number>): ServingSample[] {
  const times = [...new Set([...changes.map((c) => c.atMs), ...first.values()])].sort((a, b) => a - b);
  const out: ServingSample[] = [];
  for (const atMs of times) {
    const inForce = changes.filter((c) => c.atMs <= atMs).at(-1);
    if (!inForce) continue;
    const count = servedEndpoints(inForce.routing, (version) => (first.get(version) ?? Number.POSITIVE_INFINITY) <= atMs);
    if (out.at(-1)?.count !== count) out.push({ atMs, count });
  }
  return out;
}

export interface FleetWindowFigures {
  /** Fewest endpoints served at any moment of the window (undefined: no routing sampled). */
  minServing: number | undefined;
  /** The last memory sample before the window (MB). */
  memoryBeforeMb: number | undefined;
  /** The largest memory sample inside the window (MB). */
  memoryPeakMb: number | undefined;
}

/** The samples' figures for the window [fromMs, toMs] (the deploy), on the samples' clock. */
export function fleetFigures(samples: { serving: readonly ServingSample[]; memory: readonly MemorySample[] }, fromMs: number, toMs: number): FleetWindowFigures {
  // The count in force when the window opens is the last change before it, then every change inside.
  const inForce = samples.serving.filter((s) => s.atMs <= fromMs).at(-1);
  const inside = samples.serving.filter((s) => s.atMs > fromMs && s.atMs <= toMs);
  const counts = [...(inForce ? [inForce] : []), ...inside].map((s) => s.count);
  const before = samples.memory.filter((s) => s.atMs < fromMs).at(-1);
  const during = samples.memory.filter((s) => s.atMs >= fromMs && s.atMs <= toMs);
  const mb = (kb: number) => Math.round(kb / 1024);
  return {
    minServing: counts.length === 0 ? undefined : Math.min(...counts),
    memoryBeforeMb: before === undefined ? undefined : mb(before.rssKb),
    memoryPeakMb: during.length === 0 ? undefined : mb(Math.max(...during.map((s) => s.rssKb))),
  };
}

import type { RunContext } from "./deploy-options.js";
import { sleep } from "./duration.js";
import { NodropError, abortError } from "./errors.js";
import { endpoint } from "./routing.js";
import { announce, timed } from "./step-executor.js";
import { type VersionFigures, addCounts, emptyCounts, figuresOf, formatFigures, validCounts } from "./traffic.js";
import type { CanaryAnalysis, GateStep, PlanPhase, TrafficCounts } from "./types.js";

/** A gate's outcome, as the report, the journal and `nodrop status` show it. */
export interface GateReport {
  readonly phase: string;
  readonly gate: string;
  /** The new version's share of clients during the gate (percent). */
  readonly weight: number;
  readonly decision: "passed" | "failed" | "waited" | "paused";
  /** Why it decided so, in one line. */
  readonly reason: string;
  readonly ms: number;
  /** What the proxy saw: the new version, and every other version together. */
  readonly canary?: VersionFigures | undefined;
  readonly baseline?: VersionFigures | undefined;
}

/** Thrown by a manual gate: the deploy stops there, paused, without recovery (see GateStep.manual). */
export class GatePaused extends Error {
  readonly phase: string;
  readonly gate: string;
  constructor(phase: string, gate: string) {
    super(`paused at gate ${gate} (${phase}): \`nodrop promote\` goes on, \`nodrop abort\` goes back`);
    this.phase = phase;
    this.gate = gate;
  }
}

export type GateVerdict = { readonly decision: "pass" | "fail" | "wait"; readonly reason: string };

/**
 * Judges a gate from what the proxy counted so far, pure. It fails as soon as enough requests
 * show a breach (a bad release stops early), passes only once its time is up with enough
 * requests, and fails as inconclusive when they never come.
 */
export function judgeGate(canary: VersionFigures, baseline: VersionFigures, analysis: CanaryAnalysis, elapsedMs: number, gateMs: number, unattributedErrors = 0): GateVerdict {
  if (unattributedErrors > 0) {
    return { decision: "fail", reason: `${unattributedErrors} 5xx the proxy could not attribute to an instance (a pool with no live server left): counted against ${canary.version}` };
  }
  const enough = canary.requests >= analysis.minRequests;
  if (enough) {
    // A thin baseline says little: its own rate counts only with minRequests behind it (0 otherwise, the strict side).
    const baseRate = baseline.requests >= analysis.minRequests ? baseline.errorRate : 0;
    const increase = canary.errorRate - baseRate;
    // Above the allowance, and unlikely (p < 1%) for a version whose true rate were at it: one
    // unlucky 5xx among 50 requests is not a breach.
    if (increase > analysis.maxErrorRateIncrease && binomialTail(canary.errors, canary.requests, Math.min(1, baseRate + analysis.maxErrorRateIncrease)) < BREACH_P) {
      return { decision: "fail", reason: `5xx rate ${pct(canary.errorRate)} against ${pct(baseRate)} on ${baseline.version}: more than ${pct(analysis.maxErrorRateIncrease)} above` };
    }
    // With minRequests on each side, the latencies are compared: p99 over a few hundred requests
    // each, below that the new version's p90 against the old one's p95 (over 50 requests, p99 is
    // just the slowest one; and where about a tenth of the requests are slow by nature, the p90 of
    // either side falls on one side of that tenth or the other by chance, so the old version's
    // quantile is taken a sampling margin above). Above a floor only: a few ms either way is noise.
    if (baseline.requests >= analysis.minRequests) {
      const fine = canary.requests >= LATENCY_MIN_REQUESTS && baseline.requests >= LATENCY_MIN_REQUESTS;
      const [name, ours, theirs] = fine ? ["p99", canary.p99Ms, baseline.p99Ms] : ["p90", canary.p90Ms, baseline.p95Ms ?? baseline.p90Ms];
      if (ours !== undefined && theirs !== undefined && ours > analysis.maxLatencyRatio * Math.max(theirs, analysis.latencyFloorMs)) {
        return { decision: "fail", reason: `${name} latency ${ms(ours)} against ${ms(theirs)} on ${baseline.version}${fine ? "" : " (its p95)"}: more than ${analysis.maxLatencyRatio}x` };
      }
    }
  }
  if (elapsedMs < gateMs) return { decision: "wait", reason: "watching" };
  if (enough) return { decision: "pass", reason: `${canary.requests} requests within the thresholds` };
  if (elapsedMs < gateMs + analysis.extraMs) return { decision: "wait", reason: `waiting for ${analysis.minRequests} requests (${canary.requests} so far)` };
  return { decision: "fail", reason: `inconclusive: ${canary.requests} requests on ${canary.version} in ${ms(elapsedMs)}, fewer than the ${analysis.minRequests} a verdict needs` };
}

/** How often a gate without analysis asks the verify probe whether a threshold was crossed. */
const VERIFY_POLL_MS = 1000;

/** A breach is a count of 5xx this unlikely (or less) for a version at the allowed rate. */
const BREACH_P = 0.01;
/** Fewest requests on each side before the latencies compared are p99s (p90s below). */
export const LATENCY_MIN_REQUESTS = 200;

/** P(X >= k) for X ~ Binomial(n, p), summed in log space (n may be large and p small). */
export function binomialTail(k: number, n: number, p: number): number {
  if (k <= 0) return 1;
  if (k > n) return 0;
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  // P(X < k): the terms i = 0 .. k-1, each from the one before.
  let log = n * Math.log1p(-p);
  let below = log;
  const ratio = Math.log(p) - Math.log1p(-p);
  for (let i = 0; i < k - 1; i++) {
    log += Math.log(n - i) - Math.log(i + 1) + ratio;
    below = Math.max(below, log) + Math.log1p(Math.exp(-Math.abs(below - log)));
  }
  return Math.max(0, 1 - Math.exp(below));
}

const pct = (rate: number) => `${(100 * rate).toFixed(2).replace(/\.?0+$/, "")}%`;
const ms = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);

/**
 * Runs a gate: waits its time, and with analysis reads the proxy's counts every `intervalMs`,
 * attributing each endpoint to the version nodrop knows runs there. A breach throws E_CANARY with
 * the figures that decided it; the phase's failure rule (a canary's: every instance back) follows.
 */
export async function runGateStep(context: RunContext, phase: PlanPhase, step: GateStep): Promise<void> {
  const { run, options } = context;
  const signal = options.signal;
  const t0 = performance.now();
  const record = (report: Omit<GateReport, "phase" | "gate" | "weight" | "ms">) => {
    const full: GateReport = { phase: phase.name, gate: step.name, weight: step.weight, ms: Math.round(performance.now() - t0), ...report };
    run.gates.push(full);
    run.emit({ type: "gate", ...full });
    return full;
  };
  if (step.manual) {
    const report = record({ decision: "paused", reason: `${step.weight}% of clients on ${run.version}, waiting for \`nodrop promote\`` });
    await announce(context, { phase: phase.name, kind: "gate", instance: undefined, status: "paused", detail: report.reason });
    throw new GatePaused(phase.name, step.name);
  }
  await timed(context, phase.name, "gate", undefined, async () => {
    const analysis = step.analysis;
    // The verify probe (the config's verify section) gates every step too: a threshold it crosses
    // during the gate fails the gate at once, instead of at the next step.
    const probeBreach = () => {
      const breach = options.verify?.breach();
      if (!breach) return;
      record({ decision: "failed", reason: breach });
      throw new NodropError("E_CANARY", `gate ${step.name} (${step.weight}%) failed: ${breach}`);
    };
    if (!analysis) {
      for (let left = step.ms; left > 0; left -= VERIFY_POLL_MS) {
        await sleep(Math.min(VERIFY_POLL_MS, left), signal).catch(() => Promise.reject(abortError(signal)));
        probeBreach();
      }
      return record({ decision: "waited", reason: `${step.weight}% for ${ms(step.ms)}` }).reason;
    }
    const proxy = options.proxy;
    if (!proxy.capabilities.traffic || !proxy.traffic) throw new NodropError("E_PLAN", `gate ${step.name}: proxy ${proxy.name} cannot count traffic (nginx: set proxy.accessLog)`);
    let cursor = (await proxy.traffic(undefined, { signal })).cursor;
    let totals = new Map<string, TrafficCounts>();
    let unattributed = 0;
    for (;;) {
      await sleep(Math.min(analysis.intervalMs, Math.max(0, step.ms - (performance.now() - t0))) || analysis.intervalMs, signal).catch(() => Promise.reject(abortError(signal)));
      probeBreach();
      const window = await proxy.traffic(cursor, { signal });
      cursor = window.cursor;
      totals = addByVersion(totals, window.endpoints, versionAt(context));
      if (Number.isSafeInteger(window.unattributed?.errors)) unattributed += window.unattributed!.errors;
      const canary = figuresOf(run.version, totals.get(run.version) ?? emptyCounts());
      const baseline = figuresOf(otherVersions(totals, run.version), sumOthers(totals, run.version));
      const verdict = judgeGate(canary, baseline, analysis, performance.now() - t0, step.ms, unattributed);
      if (verdict.decision === "wait") continue;
      const report = record({ decision: verdict.decision === "pass" ? "passed" : "failed", reason: verdict.reason, canary, baseline });
      if (verdict.decision === "pass") return `${report.reason}; ${formatFigures(canary)}; ${formatFigures(baseline)}`;
      throw new NodropError("E_CANARY", `gate ${step.name} (${step.weight}%) failed: ${verdict.reason}; ${formatFigures(canary)}; ${formatFigures(baseline)}`);
    }
  });
}

/** endpoint -> the version nodrop knows runs there (each instance's live slot and idle slot). */
function versionAt(context: RunContext): Map<string, string> {
  const map = new Map<string, string>();
  for (const t of context.run.tracked.values()) {
    const spec = t.control.spec;
    if (t.version !== undefined) map.set(endpoint(spec.address, t.port), t.version);
    if (t.idle?.version !== undefined) map.set(endpoint(spec.address, t.idle.port), t.idle.version);
  }
  return map;
}

/** The totals with a window's counts added, by version; endpoints nodrop does not know and malformed counts are left out. */
function addByVersion(totals: Map<string, TrafficCounts>, endpoints: Readonly<Record<string, TrafficCounts>>, versions: Map<string, string>): Map<string, TrafficCounts> {
  const next = new Map(totals);
  for (const [where, counts] of Object.entries(endpoints)) {
    const version = versions.get(where);
    if (version === undefined || !validCounts(counts)) continue;
    next.set(version, addCounts(next.get(version) ?? emptyCounts(), counts));
  }
  return next;
}

function sumOthers(totals: Map<string, TrafficCounts>, version: string): TrafficCounts {
  let sum = emptyCounts();
  for (const [v, counts] of totals) if (v !== version) sum = addCounts(sum, counts);
  return sum;
}

/** "v1" or "v1+v0": the versions the baseline is made of. */
function otherVersions(totals: Map<string, TrafficCounts>, version: string): string {
  const others = [...totals.keys()].filter((v) => v !== version).sort();
  return others.length > 0 ? others.join("+") : "the old version";
}

import type { RunContext } from "./deploy-options.js";
import { sleep } from "./duration.js";
import { NodropError, abortError } from "./errors.js";
import { endpoint } from "./routing.js";
import { timed } from "./step-executor.js";
import { type VersionFigures, addCounts, emptyCounts, figuresOf, formatFigures, validCounts } from "./traffic.js";
import type { CanaryAnalysis, GateStep, PlanPhase, TrafficCounts } from "./types.js";

/** A gate's outcome, as the report, the journal and `nodrop status` show it. */
export interface GateReport {
  readonly phase: string;
  readonly gate: string;
  /** The new version's share of clients during the gate (percent). */
  readonly weight: number;
  readonly decision: "passed" | "failed" | "waited";
  /** Why it decided so, in one line. */
  readonly reason: string;
  readonly ms: number;
  /** What the proxy saw: the new version, and every other version together. */
  readonly canary?: VersionFigures | undefined;
  readonly baseline?: VersionFigures | undefined;
}

export type GateVerdict = { readonly decision: "pass" | "fail" | "wait"; readonly reason: string };

/**
 * Judges a gate from what the proxy counted so far, pure. It fails as soon as enough requests
 * show a breach (a bad release stops early), passes only once its time is up with enough
 * requests, and fails as inconclusive when they never come.
 */
export function judgeGate(canary: VersionFigures, baseline: VersionFigures, analysis: CanaryAnalysis, elapsedMs: number, gateMs: number): GateVerdict {
  const enough = canary.requests >= analysis.minRequests;
  if (enough) {
    const increase = canary.errorRate - baseline.errorRate;
    if (increase > analysis.maxErrorRateIncrease) {
      return { decision: "fail", reason: `5xx rate ${pct(canary.errorRate)} against ${pct(baseline.errorRate)} on ${baseline.version}: more than ${pct(analysis.maxErrorRateIncrease)} above` };
    }
    // The ratio counts only with enough requests on both sides, and above a floor: a few ms either way is noise.
    if (baseline.requests >= analysis.minRequests && canary.p99Ms !== undefined && baseline.p99Ms !== undefined) {
      const reference = Math.max(baseline.p99Ms, analysis.latencyFloorMs);
      if (canary.p99Ms > analysis.maxLatencyRatio * reference) {
        return { decision: "fail", reason: `p99 latency ${ms(canary.p99Ms)} against ${ms(baseline.p99Ms)} on ${baseline.version}: more than ${analysis.maxLatencyRatio}x` };
      }
    }
  }
  if (elapsedMs < gateMs) return { decision: "wait", reason: "watching" };
  if (enough) return { decision: "pass", reason: `${canary.requests} requests within the thresholds` };
  if (elapsedMs < gateMs + analysis.extraMs) return { decision: "wait", reason: `waiting for ${analysis.minRequests} requests (${canary.requests} so far)` };
  return { decision: "fail", reason: `inconclusive: ${canary.requests} requests on ${canary.version} in ${ms(elapsedMs)}, fewer than the ${analysis.minRequests} a verdict needs` };
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
  await timed(context, phase.name, "gate", undefined, async () => {
    const analysis = step.analysis;
    if (!analysis) {
      await sleep(step.ms, signal).catch(() => Promise.reject(abortError(signal)));
      return record({ decision: "waited", reason: `${step.weight}% for ${ms(step.ms)}` }).reason;
    }
    const proxy = options.proxy;
    if (!proxy.capabilities.traffic || !proxy.traffic) throw new NodropError("E_PLAN", `gate ${step.name}: proxy ${proxy.name} cannot count traffic (nginx: set proxy.accessLog)`);
    let cursor = (await proxy.traffic(undefined, { signal })).cursor;
    let totals = new Map<string, TrafficCounts>();
    for (;;) {
      await sleep(Math.min(analysis.intervalMs, Math.max(0, step.ms - (performance.now() - t0))) || analysis.intervalMs, signal).catch(() => Promise.reject(abortError(signal)));
      const window = await proxy.traffic(cursor, { signal });
      cursor = window.cursor;
      totals = addByVersion(totals, window.endpoints, versionAt(context));
      const canary = figuresOf(run.version, totals.get(run.version) ?? emptyCounts());
      const baseline = figuresOf(otherVersions(totals, run.version), sumOthers(totals, run.version));
      const verdict = judgeGate(canary, baseline, analysis, performance.now() - t0, step.ms);
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

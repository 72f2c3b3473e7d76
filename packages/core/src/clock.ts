import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { isProxyGroup } from "./proxy-group.js";
import type { DeployPlan, Proxy } from "./types.js";

/** How far a host's clock is from this machine's, as a few round trips can tell. */
export interface ClockOffset {
  /** The host's clock minus this machine's, in ms. */
  readonly offsetMs: number;
  /**
   * How far off the estimate may be: the true offset is within offsetMs ± errorMs (in fact between
   * offsetMs and offsetMs + errorMs; see measureClockOffset).
   */
  readonly errorMs: number;
}

/**
 * Measures a host's clock against this machine's. Each `date` the host runs reads its clock at
 * some point of the command's round trip, so the true offset lies between the reading minus the
 * time the answer came back and the reading minus the time the command was sent; a few samples
 * narrow that to the intersection of their intervals.
 *
 * The estimate is the interval's lower end, not NTP's midpoint: a command's round trip is not
 * symmetric. Before the host reads its clock, its side opens a session and starts a shell (over
 * SSH: a channel, sshd's fork and exec), tens of milliseconds that vary with the host's load;
 * after it, `date` exits and its answer travels back, a few milliseconds. The midpoint carries half that start-up, a different
 * amount for every sample (two hosts sharing one kernel clock came out 9 to 22 ms apart under
 * load, enough for clients of one proxy to get the old version after clients of another got the
 * new); the reading minus its arrival carries only the way back, and the sample with the fastest
 * way back bounds it (0.7 ms apart at most in the same runs).
 */
export async function measureClockOffset(executor: Executor, options: { samples?: number; signal?: AbortSignal | undefined } = {}): Promise<ClockOffset> {
  // This machine's time from one reading of its clock and the monotonic timer: a step of its own
  // clock mid-measurement cannot skew it, and it has a fraction of a millisecond.
  const anchor = Date.now() - performance.now();
  const now = () => anchor + performance.now();
  // The true offset is at least every sample's reading minus its arrival, at most its reading minus its sending.
  const readings: number[] = [];
  let atMost = Infinity;
  for (let i = 0; i < Math.max(options.samples ?? 5, 1); i++) {
    const sent = now();
    const result = await executor.exec("date +%s%3N", { signal: options.signal, timeoutMs: 10_000 });
    const received = now();
    const hostNow = Number(result.stdout.trim());
    if (result.code !== 0 || !Number.isSafeInteger(hostNow) || hostNow <= 0) {
      throw new NodropError("E_PREFLIGHT", `cannot read the clock on ${executor.host}: ${result.stderr.trim() || result.stdout.trim().slice(0, 80) || `exit ${result.code}`}`);
    }
    readings.push(hostNow - received);
    // +1: the reading is in whole milliseconds, rounded down.
    atMost = Math.min(atMost, hostNow + 1 - sent);
  }
  const atLeast = Math.max(...readings);
  // No offset fits every sample: the host's clock was stepped while it was read (NTP correcting it).
  if (atMost < atLeast) {
    const spread = Math.round(Math.max(...readings) - Math.min(...readings));
    throw new NodropError("E_PREFLIGHT", `the clock on ${executor.host} moved by ${spread}ms while nodrop read it (${readings.length} readings in a row): deploy again once it is steady`);
  }
  return { offsetMs: atLeast, errorMs: atMost - atLeast };
}

/** Most two proxy hosts' clocks may differ by for one switch instant (docs/guides/several-proxies.md). */
export const CLOCK_SPREAD_LIMIT_MS = 50;

/** Widest error bound a clock measurement may have (no round trip faster than this: too slow to tell). */
export const CLOCK_ERROR_LIMIT_MS = 200;

/**
 * Whether several hosts can switch at one instant: their measured offsets no further apart than
 * the limit. Each estimate carries the same kind of bias (the answer's way back), which cancels
 * between hosts reached the same way; the error bounds are not summed, or identical clocks would be
 * refused. A measurement whose error bound is itself too wide cannot vouch for the hosts and is
 * refused too. Returns the refusal's text when they cannot.
 */
export function clockSpreadProblem(offsets: readonly { label: string; clock: ClockOffset }[], limitMs = CLOCK_SPREAD_LIMIT_MS, errorLimitMs = CLOCK_ERROR_LIMIT_MS): string | undefined {
  if (offsets.length < 2) return undefined;
  const coarse = offsets.filter((o) => o.clock.errorMs > errorLimitMs);
  if (coarse.length > 0) {
    return `the proxy hosts' clocks cannot be compared closely enough for a switch at one instant (${formatOffsets(offsets)}): a round trip to ${coarse.map((o) => o.label).join(", ")} took more than ${errorLimitMs}ms every time; deploy when the hosts answer faster`;
  }
  const spread = Math.max(...offsets.map((o) => o.clock.offsetMs)) - Math.min(...offsets.map((o) => o.clock.offsetMs));
  if (spread <= limitMs) return undefined;
  return (
    `the proxy hosts' clocks are ${Math.round(spread)}ms apart (${formatOffsets(offsets)}), more than the ${limitMs}ms within which they must agree to switch at one instant: ` +
    "synchronise them (NTP: chrony or systemd-timesyncd), then deploy again"
  );
}

/** "lb1 +3ms ±1ms, lb2 -812ms ±2ms": each host's offset from this machine. */
export function formatOffsets(offsets: readonly { label: string; clock: ClockOffset }[]): string {
  const signed = (ms: number) => `${ms >= 0 ? "+" : "-"}${Math.abs(Math.round(ms))}ms`;
  return offsets.map((o) => `${o.label} ${signed(o.clock.offsetMs)} ±${Math.ceil(o.clock.errorMs)}ms`).join(", ");
}

/**
 * Before a plan with a timed switch runs through several proxies: every proxy host's clock, and a
 * refusal (nothing touched yet) when they are too far apart for one instant. Returns a line for the
 * plan's notes (`nodrop plan` prints the offsets); nothing for one proxy or a plan without a switch.
 */
export async function checkProxyClocks(proxy: Proxy, plan: DeployPlan, signal?: AbortSignal): Promise<string[]> {
  const switches = plan.phases.some((phase) => phase.steps.some((step) => step.kind === "route" && step.routing.switchDefault !== undefined));
  if (!switches || !isProxyGroup(proxy) || proxy.members.length < 2) return [];
  const offsets = await proxy.measureClocks({ signal });
  const problem = clockSpreadProblem(offsets);
  if (problem) throw new NodropError("E_PREFLIGHT", `refusing to deploy: ${problem}`);
  return [`proxy clocks (the switch is at one instant on all of them): ${formatOffsets(offsets)}, within ${CLOCK_SPREAD_LIMIT_MS}ms`];
}

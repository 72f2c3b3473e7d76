/**
 * nginx's master starts a new worker generation, sleeps 100 ms, and only then tells the old
 * workers to quit (nginx-mechanics, fact 3); it parses the whole config before all of that.
 */
export const MASTER_OVERLAP_MS = 100;

/**
 * How far ahead a timed switch must be set on this nginx, from what it has shown in this run.
 *
 * A timed switch is only "one instant" if every worker of the generation before the switch reload
 * has stopped taking requests by then: such a worker still routes by the old config, so a request
 * it takes after the instant gets the old version while others already get the new one. That
 * generation closes once the adapter has written the file and run `nginx -t` (one parse) and the
 * master has parsed it again and slept its 100 ms overlap, so the instant goes no earlier than
 * twice the slowest close seen here (from the start of a change to every old worker shutting
 * down), and no earlier than the overlap plus three times the slowest parse (`nginx -T` at the
 * check, `nginx -t` before each reload) with a few polls of slack. The strategy's switchDelay is a
 * floor on top. Nothing here can be trusted blindly: after each timed reload the adapter checks
 * that the old generation did close before the instant, and says so when it did not.
 */
export class SwitchTiming {
  #slowestCloseMs = 0;
  #slowestParseMs = 0;
  readonly #pollMs: number;

  constructor(pollMs: number) {
    this.#pollMs = pollMs;
  }

  /** A full parse of the config took this long (the command's whole run: an overestimate). */
  noteParse(ms: number): void {
    if (Number.isFinite(ms)) this.#slowestParseMs = Math.max(this.#slowestParseMs, ms);
  }

  /** From the start of a change (the instant is set then) to every old worker shutting down. */
  noteClose(ms: number): void {
    if (Number.isFinite(ms)) this.#slowestCloseMs = Math.max(this.#slowestCloseMs, ms);
  }

  /**
   * Why an instant given from outside (proxies switching together) `delayMs` away on this host's
   * clock is too close to use, or undefined: it must leave at least the master's overlap and two
   * parses (`nginx -t`, then the reload's), or this nginx's old generation would still take requests
   * after it. Past or too close, nothing is written: the switch would not be one instant.
   */
  givenInstantProblem(host: string, delayMs: number): string | undefined {
    const floor = Math.ceil(MASTER_OVERLAP_MS + 2 * this.#slowestParseMs);
    if (Number.isFinite(delayMs) && delayMs >= floor) return undefined;
    const when = !Number.isFinite(delayMs) ? "not a time" : delayMs < 0 ? `${Math.round(-delayMs)}ms in the past` : `only ${Math.round(delayMs)}ms away`;
    return `the switch instant given for nginx on ${host} is ${when} on its clock, and this nginx needs at least ${floor}ms (its 100ms overlap and two parses of its config): raise strategy.switchDelay, or look at the link to ${host}`;
  }

  /** The delay to set: what the strategy asked for, or longer when this nginx needs it. */
  delayFor(requestedMs: number): number {
    const fromParse = MASTER_OVERLAP_MS + 3 * this.#slowestParseMs + 4 * this.#pollMs;
    return Math.ceil(Math.max(requestedMs, 2 * this.#slowestCloseMs, fromParse));
  }
}

/**
 * The warning for a timed switch whose previous generation was not seen closed before its instant
 * (`closedAt` is when it was seen closed, on the proxy host's clock; undefined: not within the
 * confirm timeout). Requests in between may have been answered by the old version after the first
 * new answer. Seen late, not necessarily closed late: the check polls.
 */
export function lateSwitchWarning(host: string, switchAt: number, closedAt: number | undefined, delayMs: number): string | undefined {
  if (closedAt !== undefined && closedAt <= switchAt) return undefined;
  const when = closedAt === undefined ? "was not seen closed within the confirm timeout" : `was seen closed ${Math.round(closedAt - switchAt)}ms after the switch instant`;
  return `nginx on ${host}: the previous worker generation ${when} (the switch was set ${delayMs}ms after the change began): requests it took in between may have had the old version after the first new one; raise strategy.switchDelay`;
}

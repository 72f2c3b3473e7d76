import { inspect, isDeepStrictEqual } from "node:util";
import { NodropError } from "@nodrop/core";

/**
 * What every check throws. The suites assert with these helpers rather than a runner's `expect`,
 * so they run unchanged under vitest, jest, node:test or anything else that fails a test on a throw.
 */
export class ConformanceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConformanceError";
  }
}

/** A value as a message shows it: one line, strings quoted, nested objects in full. */
export function show(value: unknown): string {
  return inspect(value, { depth: 6, breakLength: Number.POSITIVE_INFINITY, maxArrayLength: 20, maxStringLength: 200 });
}

export function ok(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new ConformanceError(typeof message === "string" ? message : message());
}

export function equal<T>(actual: T, expected: T, what: string): void {
  if (!isDeepStrictEqual(actual, expected)) throw new ConformanceError(`${what}: expected ${show(expected)}, got ${show(actual)}`);
}

/** Awaits a promise that must reject; returns what it rejected with. */
export async function rejects(promise: Promise<unknown>, what: string): Promise<unknown> {
  try {
    const value = await promise;
    throw new ConformanceError(`${what}: expected a rejection, but it resolved with ${show(value)}`);
  } catch (error) {
    if (error instanceof ConformanceError) throw error;
    return error;
  }
}

/** Asserts a NodropError (any copy of core: the brand, not instanceof) with one of the given codes. */
export function nodropError(error: unknown, codes: readonly string[] | undefined, what: string): NodropError {
  if (!NodropError.is(error)) throw new ConformanceError(`${what}: expected a NodropError${codes ? ` (${codes.join(" or ")})` : ""}, got ${describeError(error)}`);
  if (codes && !codes.includes(error.code)) throw new ConformanceError(`${what}: expected code ${codes.join(" or ")}, got ${error.code}: ${error.message}`);
  return error;
}

export function describeError(error: unknown): string {
  if (NodropError.is(error)) return `NodropError ${error.code}: ${error.message}`;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return show(error);
}

/**
 * Collects the problems of one check over many cases (fleets, values) and throws them together:
 * one failing fleet should not hide that five others fail too.
 */
export class Problems {
  private readonly lines: string[] = [];

  add(where: string, problem: string): void {
    this.lines.push(`${where}: ${problem}`);
  }

  get count(): number {
    return this.lines.length;
  }

  throwIfAny(summary: string): void {
    if (this.lines.length === 0) return;
    const shown = this.lines.slice(0, 25).map((line) => `  - ${line}`);
    if (this.lines.length > shown.length) shown.push(`  ... and ${this.lines.length - shown.length} more`);
    throw new ConformanceError(`${summary} (${this.lines.length} problem${this.lines.length === 1 ? "" : "s"}):\n${shown.join("\n")}`);
  }
}

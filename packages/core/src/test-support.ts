// Helpers for this package's own tests (not exported from the package).
import { readFileSync } from "node:fs";
import { expect } from "vitest";
import { NodropError } from "./errors.js";

/** Runs fn, expects it to throw a NodropError, and returns it. */
export function thrown(fn: () => unknown): NodropError {
  try {
    fn();
  } catch (error) {
    expect(NodropError.is(error)).toBe(true);
    return error as NodropError;
  }
  throw new Error("expected a throw, got none");
}

/** Awaits the promise, expects it to reject with a NodropError, and returns it. */
export async function rejected(promise: Promise<unknown>): Promise<NodropError> {
  try {
    await promise;
  } catch (error) {
    expect(NodropError.is(error)).toBe(true);
    return error as NodropError;
  }
  throw new Error("expected a rejection, got none");
}

/** Whether a process runs: a zombie (killed, not yet reaped by whoever inherited it) does not. */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 3, after the parenthesised command name, is the state.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

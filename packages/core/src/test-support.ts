// Helpers for this package's own tests (not exported from the package).
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

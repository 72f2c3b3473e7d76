import { sleep } from "@nodrop/core";

/**
 * Calls `get` until `done` holds or `withinMs` has passed, and returns the last value. For
 * states that settle shortly after a call returns (a process group being killed on another
 * host): the check is on the state, the time is only a bound.
 */
export async function eventually<T>(get: () => Promise<T>, done: (value: T) => boolean, withinMs: number, intervalMs = 100): Promise<T> {
  const deadline = performance.now() + withinMs;
  for (;;) {
    const value = await get();
    if (done(value) || performance.now() > deadline) return value;
    await sleep(intervalMs);
  }
}

import { NodropError } from "./errors.js";
import type { PlanStep } from "./types.js";

/** The steps that change instances that nothing routes to: stop, put the version in place, start, check. */
export function replaceSteps(ids: readonly string[]): PlanStep[] {
  return [
    { kind: "stop", instances: ids },
    { kind: "update", instances: ids },
    { kind: "start", instances: ids },
    { kind: "check", instances: ids },
  ];
}

/** Refuses a batch size that would leave fewer than `minInPool` instances serving (or a fleet of one). */
export function checkBatchCapacity(size: number, fleet: number, minInPool: number): void {
  if (fleet - size >= minInPool) return;
  throw new NodropError(
    "E_PLAN",
    fleet === 1
      ? "strategy.batchSize: a fleet of one instance cannot be updated without dropping requests; add a second instance"
      : `strategy.batchSize: a batch of ${size} out of ${fleet} instances leaves ${fleet - size} serving, below strategy.minInPool (${minInPool})`,
  );
}

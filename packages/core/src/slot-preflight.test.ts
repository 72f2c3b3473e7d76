import { describe, expect, it } from "vitest";
import { retireSteps, surgeSteps } from "./plan-helpers.js";
import { checkIdleSlots } from "./slot-preflight.js";
import type { DeployPlan, ObservedInstance, SlotInspection } from "./types.js";

const MiB = 2 ** 20;

/** Four instances on one host, each with a free spare port. */
const fleet: ObservedInstance[] = [0, 1, 2, 3].map((i) => ({
  id: `web-${8011 + i}`,
  host: "web1",
  address: "127.0.0.1",
  port: 8011 + i,
  slots: [8011 + i, 9011 + i] as const,
  version: "v1",
  healthy: true,
  inPool: true,
  idle: { port: 9011 + i, free: true },
}));

/** A surge plan of batches of one: start on the idle slot, then retire the old one. */
function surgePlan(prepareEarly: boolean): DeployPlan {
  return {
    strategy: "rolling",
    version: "v2",
    notes: [],
    phases: fleet.map((o, index) => ({
      name: `batch ${index + 1}/4`,
      instances: [o.id],
      onFailure: "revert" as const,
      steps: [...surgeSteps([o.id], fleet, "v2"), ...retireSteps([o.id])],
      ...(prepareEarly && index > 0 ? { prepareEarly: true } : {}),
    })),
  };
}

/** Every live process 300 MiB, the host with `availableMiB` available. */
const seen = (availableMiB: number | undefined) =>
  new Map<string, SlotInspection>(fleet.map((o) => [o.id, { free: true, liveRssBytes: 300 * MiB, ...(availableMiB === undefined ? {} : { availableBytes: availableMiB * MiB }) }]));

describe("checkIdleSlots: how many batches' old processes may still be stopping", () => {
  // Without the pipeline: two batches overlap at the least (1028 MiB, see surge.test.ts); each
  // batch more that may still be stopping adds a new process at 1.25x (375 MiB) less the growth
  // of one already counted (75 MiB): 1328, then 1628 MiB.
  it.each([
    [1100, 0, "1028 MiB"],
    [1400, 1, "1328 MiB"],
    [1700, 2, "1628 MiB"],
  ])("with %i MiB available: %i more, needing %s", (available, extra, needed) => {
    const check = checkIdleSlots(surgePlan(false), fleet, seen(available));
    expect(check.extraOverlap).toBe(extra);
    expect(check.notes).toContain(`memory for the overlap on web1: ${needed} needed, ${available} MiB available`);
  });

  it("says so in the plan's notes once more than one batch may still be stopping", () => {
    expect(checkIdleSlots(surgePlan(false), fleet, seen(1400)).notes).toContain("with that memory, up to 2 earlier batches' old processes may still be stopping while a batch starts its new ones");
    expect(checkIdleSlots(surgePlan(true), fleet, seen(8192)).notes).toContain("with that memory, every earlier batch's old processes may still be stopping while a batch starts its new ones");
    expect(checkIdleSlots(surgePlan(false), fleet, seen(1100)).notes.some((n) => n.startsWith("with that memory"))).toBe(false);
  });

  it("allows no more than the least when a host's memory was not measured", () => {
    const check = checkIdleSlots(surgePlan(true), fleet, seen(undefined));
    expect(check.extraOverlap).toBe(0);
    expect(check.notes).toEqual(["memory for the overlap on web1 not measured (nodrop cannot see the processes on the live ports, or /proc/meminfo): not checked"]);
  });

  it("refuses when even the least does not fit, by how much", () => {
    expect(() => checkIdleSlots(surgePlan(true), fleet, seen(1200))).toThrow(/host web1 has 1200 MiB available, the overlap needs 1328 MiB .*: 128 MiB short/);
  });
});

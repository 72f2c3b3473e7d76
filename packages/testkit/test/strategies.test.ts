// strategySuite over nodrop's own strategies, with their options as the config would parse them.
import { schema } from "@nodrop/core";
import { blueGreenOptionsSchema, blueGreenStrategy, halfSplitOptionsSchema, halfSplitStrategy } from "@nodrop/strategy-half-split";
import { rollingOptionsSchema, rollingStrategy } from "@nodrop/strategy-rolling";
import { canaryAbortStrategy, canaryOptionsSchema, canaryStrategy } from "@nodrop/strategy-canary";
import { stickyOptionsSchema, stickyStrategy } from "@nodrop/strategy-sticky";
import { afterAll, beforeAll, describe, it } from "vitest";
import { fleetScenarios, slotFleetScenarios, strategySuite } from "../src/index.js";

const api = { describe, it, beforeAll, afterAll };

strategySuite(api, { name: "rolling, batchSize 1", create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: 1 }, "strategy") });
strategySuite(api, { name: 'rolling, batchSize "50%"', create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: "50%" }, "strategy") });
strategySuite(api, { name: "sticky", create: stickyStrategy, options: schema.parseOrThrow(stickyOptionsSchema, {}, "strategy") });
strategySuite(api, { name: "canary", create: canaryStrategy, options: schema.parseOrThrow(canaryOptionsSchema, {}, "strategy") });
strategySuite(api, { name: "canary, 5% 25% 50%, batches of 2", create: canaryStrategy, options: schema.parseOrThrow(canaryOptionsSchema, { steps: ["5%", "25%", "50%"], batchSize: 2 }, "strategy") });

const halfSplitOptions = schema.parseOrThrow(halfSplitOptionsSchema, {}, "strategy");
// Every generated fleet, including those a failed earlier deploy leaves behind (mixed versions,
// instances down or out of the pool): these checks found three defects in half-split, now fixed.
strategySuite(api, {
  name: "half-split",
  create: halfSplitStrategy,
  options: halfSplitOptions,
});
// Every check, without exceptions, on the fleets half-split handles: all in the pool, none on the target yet.
strategySuite(api, {
  name: "half-split, fleets in the pool and not yet on the target",
  create: halfSplitStrategy,
  options: halfSplitOptions,
  scenarios: fleetScenarios().filter((s) => s.instances.every((i) => i.inPool) && (s.instances.every((i) => i.version === "v2") || s.instances.every((i) => i.version !== "v2"))),
});

// Two slots per instance: the walk follows each slot (which one is live, what runs on it).
const slotScenarios = slotFleetScenarios();
strategySuite(api, { name: "rolling, surge, batchSize 1", create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: 1, surge: true }, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: 'rolling, surge, batchSize "50%", keepOld', create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: "50%", surge: true, keepOld: "5m" }, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: "sticky, surge", create: stickyStrategy, options: schema.parseOrThrow(stickyOptionsSchema, { surge: true }, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: "blue-green", create: blueGreenStrategy, options: schema.parseOrThrow(blueGreenOptionsSchema, {}, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: "rolling (no surge) on two-slot fleets", create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: 1 }, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: "canary, surge", create: canaryStrategy, options: schema.parseOrThrow(canaryOptionsSchema, { surge: true }, "strategy"), scenarios: slotScenarios });
strategySuite(api, { name: "canary, surge, 5% 25% 50%, batches of 2", create: canaryStrategy, options: schema.parseOrThrow(canaryOptionsSchema, { steps: ["5%", "25%", "50%"], batchSize: 2, surge: true }, "strategy"), scenarios: slotScenarios });
// An abort goes back to a version some healthy instance runs: a fleet all on the old version has none on the target, which it refuses by design.
strategySuite(api, {
  name: "canary-abort, two slots",
  create: canaryAbortStrategy,
  options: {},
  scenarios: slotScenarios,
  knownFailures: { "refuses a fleet only with a NodropError E_PLAN, and plans an ordinary fleet": "an abort needs an instance on the version it goes back to" },
});

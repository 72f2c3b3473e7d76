// strategySuite over nodrop's own strategies, with their options as the config would parse them.
import { schema } from "@nodrop/core";
import { halfSplitOptionsSchema, halfSplitStrategy } from "@nodrop/strategy-half-split";
import { rollingOptionsSchema, rollingStrategy } from "@nodrop/strategy-rolling";
import { stickyOptionsSchema, stickyStrategy } from "@nodrop/strategy-sticky";
import { afterAll, beforeAll, describe, it } from "vitest";
import { fleetScenarios, strategySuite } from "../src/index.js";

const api = { describe, it, beforeAll, afterAll };

strategySuite(api, { name: "rolling, batchSize 1", create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: 1 }, "strategy") });
strategySuite(api, { name: 'rolling, batchSize "50%"', create: rollingStrategy, options: schema.parseOrThrow(rollingOptionsSchema, { batchSize: "50%" }, "strategy") });
strategySuite(api, { name: "sticky", create: stickyStrategy, options: schema.parseOrThrow(stickyOptionsSchema, {}, "strategy") });

const halfSplitOptions = schema.parseOrThrow(halfSplitOptionsSchema, {}, "strategy");
// Half-split fails three checks on fleets that a failed earlier deploy leaves behind (reported,
// not fixed here): it puts instances out of the pool, down ones included, into the default pool
// of its first phase; it pins the new version to half A while instances already on that version
// serve (clients holding its cookie reach A while A is stopped; the engine refuses to stop A's
// instances that run it: "plan would stop web-2 while it is in the pool"); and it leaves instances
// out of the pool when the whole fleet already runs the version.
strategySuite(api, {
  name: "half-split",
  create: halfSplitStrategy,
  options: halfSplitOptions,
  knownFailures: {
    "never stops or updates an instance a request can still reach": "half-split pins the new version to half A while instances already on it serve",
    "never routes requests to an instance that is down (stopped and not checked since, or unhealthy)": "half-split routes to instances out of the pool (down ones too) and pins the new version to A while A is stopped",
    "the routing in force after the last step serves every instance": "half-split leaves instances out of the pool when every instance already runs the version",
  },
});
// Every check, without exceptions, on the fleets half-split handles: all in the pool, none on the target yet.
strategySuite(api, {
  name: "half-split, fleets in the pool and not yet on the target",
  create: halfSplitStrategy,
  options: halfSplitOptions,
  scenarios: fleetScenarios().filter((s) => s.instances.every((i) => i.inPool) && (s.instances.every((i) => i.version === "v2") || s.instances.every((i) => i.version !== "v2"))),
});

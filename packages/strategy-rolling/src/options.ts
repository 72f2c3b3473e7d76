import { schema } from "@nodrop/core";

const percent = schema.str({ pattern: /^(100|[1-9][0-9]?)%$/, hint: 'a percentage such as "25%"' });

export const rollingOptionsSchema = schema.object({
  batchSize: schema.optional(
    schema.either(schema.int({ min: 1 }), percent, { hint: 'a count (1) or a percentage of the fleet ("25%")', doc: "Instances updated at once." }),
    1,
  ),
  minInPool: schema.optional(schema.int({ min: 1, doc: "Fewest instances left serving while a batch is out; a plan that would go below is refused." }), 1),
  soak: schema.optional(schema.duration({ doc: "Wait after a batch is back in the pool before the next one starts." }), 0),
  surge: schema.optional(
    schema.bool({ doc: "Start each batch's new version on the instances' spare ports while the old one serves, swap them in one reload and stop the old processes in the background: the pool never shrinks. Needs two slots per instance." }),
    false,
  ),
  prepareAhead: schema.optional(
    schema.bool({
      doc: "With surge: start the next batch's new processes while this batch swaps, so the reload does not hold it up. One more batch's processes then run beside the old ones (preflight's memory check counts them); false on hosts short of memory.",
    }),
    true,
  ),
  keepOld: schema.optional(
    schema.duration({ doc: "With surge: keep the old processes running this long after the deploy, so that `nodrop rollback` swaps back in one reload without starting anything; then they stop." }),
    0,
  ),
});

/** What plan() takes; fields left out take their defaults (the parsed config section has them all). */
export type RollingOptions = schema.Input<typeof rollingOptionsSchema>;

import { schema } from "@nodrop/core";

/**
 * How long after the switch reload the timed switch happens, unless the proxy needs longer. It
 * must cover the reload's overlap, during which the old workers still take requests: nginx's master
 * sleeps 100 ms before it retires them, and under load the old generation was seen closed 125 to
 * 270 ms after the signal (docs/guides/slots.md). nginx's adapter sets the switch later when this
 * nginx showed slower parses or closes, and warns when the old generation closed after the instant.
 */
export const DEFAULT_SWITCH_DELAY = 500;

const ids = schema.list(schema.str({ pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, hint: "an instance id" }), { min: 1 });

export const halfSplitOptionsSchema = schema.object({
  split: schema.optional(
    schema.oneOf(["balanced", "by-host", "explicit"] as const, {
      doc: "balanced: each half keeps instances on every host. by-host: each half is whole hosts. explicit: the lists in `a` and `b`.",
    }),
    "balanced",
  ),
  a: schema.optional(schema.list(ids.itemSchema, { min: 1, doc: "With split: explicit, the instances updated first." })),
  b: schema.optional(schema.list(ids.itemSchema, { min: 1, doc: "With split: explicit, the instances updated after the switch." })),
  minHalf: schema.optional(schema.int({ min: 1, doc: "Fewest instances a half may have; a smaller half is refused (it must carry all traffic alone)." }), 1),
  switchDelay: schema.optional(
    schema.duration({ min: 200, max: 60_000, doc: "How long after the switch reload every nginx worker flips to the new half at once (covers the reload overlap; the nginx adapter waits longer when this nginx needs it, and warns when its old workers closed late)." }),
    DEFAULT_SWITCH_DELAY,
  ),
});

/** What plan() takes; fields left out take their defaults (the parsed config section has them all). */
export type HalfSplitOptions = schema.Input<typeof halfSplitOptionsSchema>;

export const blueGreenOptionsSchema = schema.object({
  switchDelay: schema.optional(
    schema.duration({ min: 200, max: 60_000, doc: "How long after the switch reload every nginx worker flips to the new slots at once (covers the reload overlap; the nginx adapter waits longer when this nginx needs it, and warns when its old workers closed late)." }),
    DEFAULT_SWITCH_DELAY,
  ),
  keepOld: schema.optional(
    schema.duration({ doc: "Keep the old processes running this long after the switch, so that `nodrop rollback` swaps back in one reload without starting anything; then they stop." }),
    0,
  ),
});

/** Blue-green's options; fields left out take their defaults. */
export type BlueGreenOptions = schema.Input<typeof blueGreenOptionsSchema>;

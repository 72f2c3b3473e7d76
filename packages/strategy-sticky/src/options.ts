import { schema } from "@nodrop/core";

export const stickyOptionsSchema = schema.object({
  mode: schema.optional(
    schema.oneOf(["both", "instance", "version"] as const, {
      doc: "instance: a client keeps its instance. version: a client never gets an older version than it has seen. both: affinity within the instances of the client's version or newer.",
    }),
    "both",
  ),
  key: schema.optional(schema.oneOf(["address", "cookie", "header"] as const, { doc: "What identifies a client for affinity: its full address (no /24 grouping), a cookie or a header." }), "address"),
  keyName: schema.optional(schema.str({ pattern: /^[A-Za-z0-9_-]{1,64}$/, hint: "a cookie or header name", doc: "The cookie or header, with key: cookie or header." })),
  newShare: schema.optional(schema.int({ min: 1, max: 100, doc: "New clients go to the new version once it has at least this percentage of the instances (with surge and affinity, a new client goes to its own instance, whichever version it runs)." }), 50),
  batchSize: schema.optional(schema.int({ min: 1, doc: "Instances updated at once." }), 1),
  minInPool: schema.optional(schema.int({ min: 1, doc: "Fewest instances left serving while a batch is out." }), 1),
  surge: schema.optional(
    schema.bool({ doc: "Start each batch's new version on the instances' spare ports while the old one serves and swap it in: no instance leaves the pool, and each client keeps its instance through the swap. Needs two slots per instance." }),
    false,
  ),
  keepOld: schema.optional(schema.duration({ doc: "With surge: keep the old processes running this long after the deploy for an instant `nodrop rollback`." }), 0),
});

/** What plan() takes; fields left out take their defaults (the parsed config section has them all). */
export type StickyOptions = schema.Input<typeof stickyOptionsSchema>;

/** The nginx variable that keys affinity. */
export function affinityKey(options: StickyOptions): string {
  const key = options.key ?? "address";
  if (key === "address") return "$remote_addr";
  const name = options.keyName;
  if (!name) throw new Error(`strategy.keyName is required with key: ${key}`);
  return key === "cookie" ? `$cookie_${name.replace(/-/g, "_")}` : `$http_${name.toLowerCase().replace(/-/g, "_")}`;
}

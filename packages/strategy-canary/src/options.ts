import { SPLIT_KEY, schema } from "@nodrop/core";

const percentOf = (doc?: string) => schema.str({ pattern: /^(?:100|[1-9]?[0-9](?:\.[0-9]{1,2})?)%$/, hint: 'a percentage such as "5%" or "0.5%"', ...(doc ? { doc } : {}) });
const percent = percentOf();

const step = schema.object({
  weight: percent,
  pause: schema.optional(
    schema.either(schema.oneOf(["manual"] as const), schema.duration(), {
      hint: 'a duration, or "manual"',
      doc: 'How long this step\'s gate lasts, instead of strategy.gate; "manual": the deploy pauses here until `nodrop promote` (or `nodrop abort`), however long that takes.',
    }),
  ),
  analysis: schema.optional(schema.bool({ doc: "Whether this step's gate analyses the proxy's counts (false: it only waits)." })),
});

export const canaryOptionsSchema = schema.object({
  steps: schema.optional(
    schema.list(schema.either(percent, step, { hint: 'a percentage ("5%") or { weight, pause, analysis }' }), {
      min: 1,
      doc: "The new version's share of clients at each step, growing; each step ends with a gate. After the last one, the rest of the fleet is promoted batch by batch to 100%.",
    }),
    ["10%", "50%"],
  ),
  key: schema.optional(
    schema.str({ pattern: SPLIT_KEY, hint: "up to three of $remote_addr, $cookie_NAME and $http_NAME", doc: "What identifies a client for the split (nginx split_clients hashes it): a client keeps its side until a step moves it." }),
    "$remote_addr$http_user_agent",
  ),
  gate: schema.optional(schema.duration({ min: 1000, doc: "How long each step is watched before the next one." }), 60_000),
  analysis: schema.section(
    schema.object({
      enabled: schema.optional(schema.bool({ doc: "Gates compare the new version's figures in the proxy's access log with the old version's (nginx: proxy.accessLog). false: gates only wait." }), true),
      minRequests: schema.optional(schema.int({ min: 1, doc: "Fewest requests the new version must answer in a gate before it can pass." }), 50),
      maxErrorRateIncrease: schema.optional(percentOf("Highest 5xx rate of the new version above the old version's in the same window."), "1%"),
      maxLatencyRatio: schema.optional(schema.number({ min: 1, doc: "Highest p99 latency of the new version, as a multiple of the old version's in the same window." }), 2),
      latencyFloor: schema.optional(schema.duration({ doc: "The old version's p99 counts as at least this in the ratio: below it, differences are noise." }), 25),
      interval: schema.optional(schema.duration({ min: 100, doc: "How often a gate reads the proxy's counts: a breach ends the gate at the next read." }), 5000),
      extraTime: schema.optional(schema.duration({ doc: "How long a gate may wait beyond its time for minRequests before it fails as inconclusive." }), 60_000),
    }, { doc: "How a gate judges the new version against the old one, in the same window of the proxy's access log." }),
  ),
  surge: schema.optional(
    schema.bool({
      doc: "Run the canary on spare slots (instances[].spare or slots.offset): each instance starts the new version on its idle port while its old process serves, and swaps in one reload, so the fleet keeps its full capacity; the old processes keep running until the gates are passed, so that an abort swaps back to them without a restart.",
    }),
    false,
  ),
  batchSize: schema.optional(schema.int({ min: 1, doc: "Most instances out of the pool at once: a step that needs several moves them this many at a time, and the promotion after the last step goes in batches of this size." }), 1),
});

/** What plan() takes; fields left out take their defaults (the parsed config section has them all). */
export type CanaryOptions = schema.Input<typeof canaryOptionsSchema>;

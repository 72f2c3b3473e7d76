export { halfSplitStrategy, splitHalves } from "./half-split.js";
export type { Halves } from "./half-split.js";
export { halfSplitOptionsSchema } from "./options.js";
export type { HalfSplitOptions } from "./options.js";
export { halfSplitPlugin, halfSplitPlugin as default } from "./plugin.js";

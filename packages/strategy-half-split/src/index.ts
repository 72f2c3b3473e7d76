export { halfSplitStrategy, splitHalves } from "./half-split.js";
export type { Halves } from "./half-split.js";
export { blueGreenStrategy } from "./blue-green.js";
export { halfSplitOptionsSchema, blueGreenOptionsSchema } from "./options.js";
export type { HalfSplitOptions, BlueGreenOptions } from "./options.js";
export { halfSplitPlugin, blueGreenPlugin, halfSplitPlugin as default } from "./plugin.js";

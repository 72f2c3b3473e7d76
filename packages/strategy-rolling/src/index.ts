export { rollingStrategy, batchCount, toBatches, spreadByHost } from "./rolling.js";
export { rollingOptionsSchema } from "./options.js";
export type { RollingOptions } from "./options.js";
export { rollingPlugin, rollingPlugin as default } from "./plugin.js";

export { rollingStrategy, batchCount, toBatches } from "./rolling.js";
export { rollingOptionsSchema } from "./options.js";
export type { RollingOptions } from "./options.js";

export { canaryStrategy, canarySteps, canaryAnalysis, canaryCount } from "./canary.js";
export type { CanaryStep } from "./canary.js";
export { canaryOptionsSchema } from "./options.js";
export type { CanaryOptions } from "./options.js";
export { canaryAbortStrategy, canaryAbortOptionsSchema } from "./abort.js";
export { canaryPlugin, canaryAbortPlugin, canaryPlugin as default } from "./plugin.js";

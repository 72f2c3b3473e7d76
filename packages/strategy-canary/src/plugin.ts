import { defineStrategy } from "@nodrop/core";
import { canaryStrategy } from "./canary.js";
import { type CanaryOptions, canaryOptionsSchema } from "./options.js";

/** The canary strategy as a plugin: what `strategy: { use: canary }` (or this package's name) loads. */
export const canaryPlugin = defineStrategy<CanaryOptions>({ name: "canary", optionsSchema: canaryOptionsSchema, create: canaryStrategy });

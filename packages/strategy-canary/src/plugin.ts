import { defineStrategy } from "@nodrop/core";
import { canaryAbortOptionsSchema, canaryAbortStrategy } from "./abort.js";
import { canaryStrategy } from "./canary.js";
import { type CanaryOptions, canaryOptionsSchema } from "./options.js";

/** The canary strategy as a plugin: what `strategy: { use: canary }` (or this package's name) loads. */
export const canaryPlugin = defineStrategy<CanaryOptions>({ name: "canary", optionsSchema: canaryOptionsSchema, create: canaryStrategy });

/** What `nodrop abort` runs: every client back to the version the canary started from at once, then the canary's instances. */
export const canaryAbortPlugin = defineStrategy<Record<string, never>>({ name: "canary-abort", optionsSchema: canaryAbortOptionsSchema, create: canaryAbortStrategy });

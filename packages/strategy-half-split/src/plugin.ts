import { defineStrategy } from "@nodrop/core";
import { halfSplitStrategy } from "./half-split.js";
import { type HalfSplitOptions, halfSplitOptionsSchema } from "./options.js";

/** The half-split strategy as a plugin: what `strategy: { use: half-split }` (or this package's name) loads. */
export const halfSplitPlugin = defineStrategy<HalfSplitOptions>({ name: "half-split", optionsSchema: halfSplitOptionsSchema, create: halfSplitStrategy });

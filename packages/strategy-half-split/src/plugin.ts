import { defineStrategy } from "@nodrop/core";
import { blueGreenStrategy } from "./blue-green.js";
import { halfSplitStrategy } from "./half-split.js";
import { type BlueGreenOptions, type HalfSplitOptions, blueGreenOptionsSchema, halfSplitOptionsSchema } from "./options.js";

/** The half-split strategy as a plugin: what `strategy: { use: half-split }` (or this package's name) loads. */
export const halfSplitPlugin = defineStrategy<HalfSplitOptions>({ name: "half-split", optionsSchema: halfSplitOptionsSchema, create: halfSplitStrategy });

/** The blue-green strategy as a plugin: what `strategy: { use: blue-green }` loads. */
export const blueGreenPlugin = defineStrategy<BlueGreenOptions>({ name: "blue-green", optionsSchema: blueGreenOptionsSchema, create: blueGreenStrategy });

import { defineStrategy } from "@nodrop/core";
import { type RollingOptions, rollingOptionsSchema } from "./options.js";
import { rollingStrategy } from "./rolling.js";

/** The rolling strategy as a plugin: what `strategy: { use: rolling }` (or this package's name) loads. */
export const rollingPlugin = defineStrategy<RollingOptions>({ name: "rolling", optionsSchema: rollingOptionsSchema, create: rollingStrategy });

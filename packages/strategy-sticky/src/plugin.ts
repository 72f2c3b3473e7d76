import { defineStrategy } from "@nodrop/core";
import { type StickyOptions, stickyOptionsSchema } from "./options.js";
import { stickyStrategy } from "./sticky.js";

/** The sticky strategy as a plugin: what `strategy: { use: sticky }` (or this package's name) loads. */
export const stickyPlugin = defineStrategy<StickyOptions>({ name: "sticky", optionsSchema: stickyOptionsSchema, create: stickyStrategy });

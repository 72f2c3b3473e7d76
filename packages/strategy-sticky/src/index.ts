export { stickyStrategy } from "./sticky.js";
export { stickyOptionsSchema, affinityKey } from "./options.js";
export type { StickyOptions } from "./options.js";
export { stickyPlugin, stickyPlugin as default } from "./plugin.js";

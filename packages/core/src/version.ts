// Set from package.json when core is built (tsup.config.ts) and when its sources run under vitest.
declare const __NODROP_CORE_VERSION__: string | undefined;

/** The version of this copy of @nodrop/core: what a plugin's peer range on it is checked against. */
export const CORE_VERSION: string = typeof __NODROP_CORE_VERSION__ === "string" ? __NODROP_CORE_VERSION__ : "0.0.0-source";

export { startLoad, runLoad } from "./load.js";
export { summarize, formatStats } from "./stats.js";
export { compareVersions } from "./version.js";
export { mulberry32 } from "./prng.js";
export type { LoadOptions, LoadRun, LoadResult, LoadStats, RequestRecord, RequestKind } from "./types.js";

export { nginxProxy } from "./nginx.js";
export type { NginxProxyOptions } from "./nginx.js";
export { nginxOptionsSchema } from "./options.js";
export type { NginxOptions } from "./options.js";
export { routedAddressProblems, parseServerLines } from "./nginx.js";
export { renderNginxConfig, parseRenderedConfig, nginxName, poolVariable, cookieVariable, upstreamName, msecAtLeast } from "./render.js";
export type { RenderInput } from "./render.js";
export { parseNginxVersion, nginxFeatures, compareVersions } from "./version.js";
export type { NginxFeatures } from "./version.js";

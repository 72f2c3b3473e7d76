export { haproxyProxy, HAPROXY_CAPABILITIES } from "./haproxy-proxy.js";
export type { HaproxyProxyOptions } from "./haproxy-proxy.js";
export { runtimeApi, parseServersState, parseStatCsv, adminStateOf, RuntimeApiRefusal } from "./runtime-api.js";
export type { RuntimeApi, RuntimeApiOptions, AdminState, OperationalState, ServerState, ServerStat } from "./runtime-api.js";
export { haproxyPlugin, haproxyPlugin as default, haproxyOptionsSchema } from "./plugin.js";

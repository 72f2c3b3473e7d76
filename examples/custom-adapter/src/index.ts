export { haproxyProxy } from "./haproxy-proxy.js";
export type { HaproxyProxyOptions } from "./haproxy-proxy.js";
export { runtimeApi, parseServersState, parseStatCsv, adminStateOf, RuntimeApiRefusal } from "./runtime-api.js";
export type { RuntimeApi, RuntimeApiOptions, AdminState, OperationalState, ServerState, ServerStat } from "./runtime-api.js";

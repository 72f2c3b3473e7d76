export { startTestHosts } from "./hosts.js";
export type { TestHost, TestHosts, TestHostsOptions } from "./hosts.js";
export { tcpRelay } from "./relay.js";
export type { RelayPair, TcpRelay } from "./relay.js";
export { stopNginx, testNginxConf } from "./nginx.js";
export type { TestNginxConf } from "./nginx.js";

export { startTestHosts } from "./hosts.js";
export type { TestHost, TestHosts, TestHostsOptions } from "./hosts.js";

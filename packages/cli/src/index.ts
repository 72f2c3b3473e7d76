export { main, USAGE } from "./main.js";
export type { Io } from "./main.js";
export { createDeployment, checkVersion, checkVerifyMode } from "./setup.js";
export type { Deployment, VerifyMode } from "./setup.js";
export { strategies, proxies } from "./registry.js";
export type { StrategyEntry, ProxyEntry } from "./registry.js";
export { configReference } from "./reference.js";
export { formatReport, formatPlan, formatVerify, fleetConverged, progressReporter } from "./reporter.js";

export { main, USAGE } from "./main.js";
export type { Io } from "./main.js";
// The composition the CLI is a shell over, for programs that imported it from here before it had a package of its own.
export {
  createDeployment,
  loadDeployment,
  checkVersion,
  checkVerifyMode,
  checkLockWait,
  configReference,
  formatReport,
  formatPlan,
  formatVerify,
  fleetConverged,
  progressReporter,
  lockedDeploy,
  deploymentJournal,
} from "@nodrop/deployment";
export type { Deployment, VerifyMode, LockedDeployOptions } from "@nodrop/deployment";

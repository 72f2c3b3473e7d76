export { startFleet, nginxConfText, exampleDir, fleetSh, fleetCommands, instanceVersion } from "./fleet.js";
export type { Fleet, FleetInstance, FleetOptions, FleetProxy } from "./fleet.js";
export { deployUnderLoad, runNodrop, nodropBin } from "./under-load.js";
export type { DeployUnderLoadOptions, DeployUnderLoadResult, CliRun } from "./under-load.js";
export { routingIn, sampleRouting } from "./routing-sampler.js";

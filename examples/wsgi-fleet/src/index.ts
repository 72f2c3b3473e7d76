export { startFleet, nginxConfText, exampleDir } from "./fleet.js";
export type { Fleet, FleetOptions } from "./fleet.js";

import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startFleet } from "./fleet.js";
const run = promisify(execFile);
const offset = process.argv[2] === "slots" ? 1000 : undefined;
const fleet = await startFleet({ ports: [8741, 8742, 8743, 8744], proxyPort: 18301, strategy: { name: offset ? "blue-green" : "half-split" }, ...(offset ? { slotOffset: offset } : {}) });
try {
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    const r = await run("node", ["packages/cli/dist/bin.js", "plan", "--config", fleet.configFile, "--version", "v2"], { cwd: process.cwd() }).catch((e) => e);
    console.log(`plan ${(performance.now() - t0).toFixed(0)} ms`, i === 0 ? String(r.stdout).slice(0, 300) + String(r.stderr).slice(0, 300) : "");
  }
} finally { await fleet.stop(); }

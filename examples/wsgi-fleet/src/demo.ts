// `pnpm demo`: starts the example fleet (4 gunicorn instances behind nginx, all on v1), sends
// load through nginx, deploys v2 with nodrop while the load runs (from its artifact: the release
// directory is sent to the host, checked and prepared there before any instance leaves the pool),
// prints what happened, and stops everything it started.
import path from "node:path";
import { parseArgs } from "node:util";
import { formatReport } from "@nodrop/deployment";
import { formatDuration } from "@nodrop/core";
import { formatStats } from "@nodrop/loadgen";
import { fleetSh, startFleet } from "./fleet.js";
import { deployUnderLoad } from "./under-load.js";

const { values } = parseArgs({
  options: {
    strategy: { type: "string", default: "rolling" },
    to: { type: "string", default: "v2" },
    clients: { type: "string", default: "24" },
    requests: { type: "string", default: "5000" },
  },
});

// The config's verify section: nodrop's own probe through nginx, reported with the deploy.
// Releases on the host: the artifact (the example's release directory for the version) becomes
// <fleet>/releases/<version>, and the prepare command runs there once, before the first switch.
const artifact = path.join(path.dirname(fleetSh), "releases", values.to);
const prepare = "cd {release} && test -s VERSION && python3 -m compileall -q . && date -u +%FT%TZ > PREPARED_AT";
const fleet = await startFleet({ version: "v1", strategy: { name: values.strategy }, verify: { rate: 20 }, releases: { prepare } });
let exitCode = 1;
const stopAll = async () => {
  await fleet.stop();
};
process.on("SIGINT", () => void stopAll().then(() => process.exit(130)));
try {
  console.log(`fleet: 4 gunicorn instances on ${fleet.ports.join(", ")} (v1), nginx on ${fleet.url}, config ${fleet.configFile}`);
  console.log(`load: ${values.clients} keep-alive clients, 10% POST, 10% slow (500 ms); deploying ${values.to} with ${values.strategy}`);
  console.log(`release: the artifact ${path.relative(process.cwd(), artifact)} (a directory: nodrop packs it), sent once and checked by its sha256; prepare: ${prepare}\n`);
  const result = await deployUnderLoad({
    fleet,
    version: values.to,
    // Each client has its own loopback address, so address affinity (sticky) is real.
    load: { clients: Number(values.clients), localAddresses: Array.from({ length: Number(values.clients) }, (_, i) => `127.0.20.${i + 1}`) },
    minRequests: Number(values.requests),
    args: ["--artifact", artifact],
    onStderr: (text) => process.stdout.write(text),
  });
  const versions = await fleet.versions();
  console.log("");
  if (result.report) console.log(formatReport(result.report));
  else console.log(`nodrop printed no report (exit ${result.cli.code}):\n${result.cli.stderr}`);
  console.log(`\nload through nginx during the deploy:\n${formatStats(result.stats)}`);
  console.log(`\nafter: ${Object.entries(versions).map(([port, v]) => `${port}=${v}`).join(" ")}`);
  const allNew = Object.values(versions).every((v) => v === values.to);
  const summary = {
    requests: result.stats.requests,
    rps: Math.round(result.stats.rps),
    failed: result.stats.failed,
    regressions: result.stats.versionRegressions,
    switchesPerClient: (result.stats.switchesPerClient.reduce((a, b) => a + b, 0) / Math.max(1, result.stats.switchesPerClient.length)).toFixed(1),
    deploy: result.report ? formatDuration(result.report.durationMs) : "?",
    probeFailed: result.report?.verify?.failed ?? "?",
    allOn: allNew ? values.to : "mixed",
  };
  console.log(`\nsummary: ${Object.entries(summary).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  exitCode = result.cli.code === 0 && result.stats.failed === 0 && allNew ? 0 : 1;
} finally {
  await stopAll();
}
process.exit(exitCode);

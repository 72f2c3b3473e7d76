import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startLoad } from "@nodrop/loadgen";
import { startFleet } from "./fleet.js";
const run = promisify(execFile);
const fleet = await startFleet({ ports: [8741, 8742, 8743, 8744], proxyPort: 18301 });
const workers = async () => {
  const { stdout } = await run("ps", ["-eo", "pid=,args="]);
  return stdout.split("\n").filter((l) => l.includes("nginx: worker") || l.includes("worker process is shutting down")).map((l) => ({ pid: Number(l.trim().split(/\s+/)[0]), down: l.includes("shutting down") }));
};
const load = startLoad({ url: fleet.url, clients: 48, durationMs: 40_000 });
await new Promise((r) => setTimeout(r, 1000));
const closes: number[] = [];
for (let i = 0; i < 20; i++) {
  const old = new Set((await workers()).filter((w) => !w.down).map((w) => w.pid));
  const t0 = performance.now();
  await fleet.nginx("-s", "reload");
  for (;;) {
    const now = await workers();
    if (!now.some((w) => old.has(w.pid) && !w.down)) break;
    await new Promise((r) => setTimeout(r, 2));
  }
  closes.push(Math.round(performance.now() - t0));
  await new Promise((r) => setTimeout(r, 700));
}
console.log("signal -> old generation closed (ms):", closes.join(" "), "max", Math.max(...closes));
await (load as any).stop?.();
await (load as any).done?.catch?.(() => {});
await fleet.stop();
process.exit(0);

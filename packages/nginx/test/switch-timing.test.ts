// A timed switch is one instant only if the generation before it has stopped taking requests by
// then. The adversary here is a slow nginx: its config holds a map of 300,000 entries, so every
// parse (the master's at a reload, `nginx -t`, `nginx -T`) takes a few hundred milliseconds and the
// old workers close that much later. A switch set 200 ms ahead must then be reported as late, and
// the adapter must set later switches past what it saw. Real nginx on this machine, local executor.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type ProxyInstance, type Routing, localExecutor, schema, sleep } from "@nodrop/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stopNginx, testNginxConf } from "../../testhosts/dist/index.js";
import { nginxOptionsSchema, nginxProxy, renderNginxConfig } from "../src/index.js";

const run = promisify(execFile);
const PROXY_PORT = 18766;
const APP = "timing";
const instances: ProxyInstance[] = [
  { id: "blue", host: "local", address: "127.0.0.1", port: 8766, version: "v1" },
  { id: "green", host: "local", address: "127.0.0.1", port: 8767, version: "v2" },
];
const MAP_ENTRIES = 300_000;

let dir: string;
let conf: string;
let includeFile: string;
let pidFile: string;
const servers: http.Server[] = [];

/** blue serves until the switch, then green: the routing blue-green's switch applies. */
const switchTo = (to: "blue" | "green", afterMs: number): Routing => ({
  pools: { blue: ["blue"], green: ["green"] },
  defaultPool: to === "green" ? "blue" : "green",
  pins: {},
  switchDefault: { to, afterMs },
});

function adapter() {
  const options = schema.parseOrThrow(nginxOptionsSchema, { configFile: includeFile, prefix: dir, conf, pidFile, errorLog: path.join(dir, "logs", "error.log"), confirmTimeout: "10s" }, "proxy");
  return nginxProxy({ ...options, app: APP, executor: localExecutor() });
}

/** The switch instant the include file names (epoch ms). */
async function instantInFile(): Promise<number> {
  const match = /# default pool until (\S+), then/.exec(await readFile(includeFile, "utf8"));
  if (!match) throw new Error("the include file names no switch instant");
  return Date.parse(match[1]!);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-nginx-timing-"));
  for (const sub of ["nodrop", "logs", "tmp"]) await mkdir(path.join(dir, sub), { recursive: true });
  conf = path.join(dir, "nginx.conf");
  includeFile = path.join(dir, "nodrop", `${APP}.conf`);
  pidFile = path.join(dir, "nginx.pid");
  const slow = path.join(dir, "slow.conf");
  const entries = Array.from({ length: MAP_ENTRIES }, (_, i) => `    "k${i}" ${i};`).join("\n");
  await writeFile(slow, `map $http_x_probe $timing_slow_parse {\n    default 0;\n${entries}\n}\n`);
  for (const instance of instances) {
    const server = http.createServer((req, response) => {
      req.resume();
      response.writeHead(200, { "x-instance-id": instance.id });
      response.end(instance.id);
    });
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(instance.port, instance.address, () => resolve());
    });
  }
  await writeFile(
    conf,
    testNginxConf({
      dir,
      includeFile,
      pidFile,
      errorLog: path.join(dir, "logs", "error.log"),
      listen: `127.0.0.1:${PROXY_PORT}`,
      app: APP,
      shutdownTimeout: "10s",
      workerConnections: 256,
      httpLines: ["map_hash_max_size 1048576;", "map_hash_bucket_size 128;", `include ${slow};`],
    }),
  );
  await writeFile(includeFile, renderNginxConfig({ name: APP, routing: { pools: { all: ["blue"] }, defaultPool: "all", pins: {} }, instances, generation: 1, versionCookie: "nodrop_version" }));
  await run("nginx", ["-p", dir, "-c", conf]);
  for (let i = 0; !(await answers()); i++) {
    if (i > 100) throw new Error("nginx does not answer");
    await sleep(50);
  }
});

afterAll(async () => {
  await stopNginx(pidFile);
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

function answers(): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: PROXY_PORT, path: "/", agent: false }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode === 200));
    });
    req.on("error", () => resolve(false));
  });
}

describe("nginx timed switch on a slow-parsing nginx (a 300,000-entry map)", () => {
  it("a switch set 200 ms ahead by an adapter that has measured nothing: the old generation closes after the instant, and apply() says so", async () => {
    const proxy = adapter();
    const result = await proxy.apply(switchTo("green", 200), instances);
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings![0]).toMatch(/previous worker generation was seen closed \d+ms after the switch instant \(the switch was set 200ms after the change began\).*raise strategy\.switchDelay/);
    // Its next switch goes past twice the slowest close it saw (at least the parse plus the master's 100 ms): on time.
    const before = Date.now();
    const next = await proxy.apply(switchTo("blue", 200), instances);
    expect(next.warnings).toBeUndefined();
    expect((await instantInFile()) - before).toBeGreaterThan(2 * 300);
  });

  it("an adapter that checked the proxy first, as every deploy does (its check reads a dump of over 6 MB, past the executor's output cap): the parse it timed sets the first switch late enough, no warning", async () => {
    const proxy = adapter();
    const check = await proxy.check({ instances });
    expect(check.ok, check.details.join("\n")).toBe(true);
    const before = Date.now();
    const result = await proxy.apply(switchTo("green", 200), instances);
    expect(result.warnings).toBeUndefined();
    expect((await instantInFile()) - before).toBeGreaterThan(300);
    expect(await answers()).toBe(true);
  });

  it("an instant given from outside (proxies switching together) that has passed, or leaves less than this nginx's overlap and two parses, is refused before anything is written", async () => {
    const proxy = adapter();
    await proxy.check({ instances });
    const file = await readFile(includeFile, "utf8");
    for (const switchAt of [Date.now() - 1000, Date.now() + 150]) {
      const error = await proxy.apply(switchTo("green", 200), instances, { switchAt }).then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string; routingInForce: string },
      );
      expect(error?.code).toBe("E_PROXY_RELOAD");
      expect(error?.routingInForce).toBe("previous");
      expect(error?.message).toMatch(/^the switch instant given for nginx on local is (\d+ms in the past|only \d+ms away) on its clock, and this nginx needs at least \d+ms .*nothing was changed on local/);
      expect(await readFile(includeFile, "utf8")).toBe(file);
    }
    // One far enough ahead is used as given.
    const at = Date.now() + 3000;
    await proxy.apply(switchTo("green", 200), instances, { switchAt: at });
    expect(Math.abs((await instantInFile()) - at)).toBeLessThanOrEqual(1);
  });
});

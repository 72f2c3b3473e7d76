// proxySuite over @nodrop/nginx's nginxProxy, in front of a real nginx this test starts (a
// user-owned prefix in a temporary directory, as examples/wsgi-fleet does) on 127.0.0.1:18611,
// with four node:http backends on 8611-8614 that answer with their own id.
import http from "node:http";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execOrThrow, localExecutor, type ProxyInstance, schema, shellQuote, singlePool, sleep } from "@nodrop/core";
import { nginxOptionsSchema, nginxProxy } from "@nodrop/nginx";
import { afterAll, beforeAll, describe, it } from "vitest";
import { stopNginx, testNginxConf } from "../../testhosts/dist/index.js";
import { type ProxyFixture, proxySuite } from "../src/index.js";

const PROXY_PORT = 18611;
const BACKEND_PORTS = [8611, 8612, 8613, 8614];
const APP = "kit";

proxySuite({ describe, it, beforeAll, afterAll }, { name: "nginxProxy (nginx started by the test)", setup: startNginx });

async function startNginx(): Promise<ProxyFixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-testkit-nginx-"));
  const servers: http.Server[] = [];
  const executor = localExecutor();
  const conf = path.join(dir, "nginx.conf");
  const pidFile = path.join(dir, "nginx.pid");
  const nginx = `nginx -p ${shellQuote(dir)} -c ${shellQuote(conf)}`;

  const cleanup = async () => {
    await stopNginx(pidFile);
    await Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      ),
    );
    await rm(dir, { recursive: true, force: true });
  };

  try {
    for (const sub of ["nodrop", "logs", "tmp"]) await mkdir(path.join(dir, sub), { recursive: true });
    const instances: ProxyInstance[] = BACKEND_PORTS.map((port) => ({ id: `backend-${port}`, host: "local", address: "127.0.0.1", port, version: "v1" }));
    for (const instance of instances) {
      const server = http.createServer((request, response) => {
        request.resume();
        // /slow?ms=N answers after N ms (the suite's request held in flight across a change).
        const ms = Number(new URL(request.url ?? "/", "http://x").searchParams.get("ms") ?? 0);
        setTimeout(() => {
          response.writeHead(200, { "content-type": "text/plain", "x-instance-id": instance.id });
          response.end(instance.id);
        }, Math.min(Math.max(ms, 0), 10_000));
      });
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(instance.port, instance.address, () => resolve());
      });
    }
    const includeFile = path.join(dir, "nodrop", `${APP}.conf`);
    const errorLog = path.join(dir, "logs", "error.log");
    await writeFile(conf, nginxConf({ dir, includeFile, pidFile, errorLog }));
    const proxy = nginxProxy({
      ...schema.parseOrThrow(nginxOptionsSchema, { configFile: includeFile, prefix: dir, conf, pidFile, errorLog, drainTimeout: "30s" }, "proxy"),
      app: APP,
      executor,
    });
    // The one-time setup, as `nodrop init` does it: the include file first, then nginx.
    await proxy.initialize!(singlePool(instances.map((i) => i.id)), instances);
    await execOrThrow(executor, nginx, "nginx start");
    for (let i = 0; (await request()) === undefined; i++) {
      if (i > 100) throw new Error(`nginx on 127.0.0.1:${PROXY_PORT} does not answer`);
      await sleep(50);
    }
    return { proxy, instances, request, slowRequest: (ms: number) => request(`/slow?ms=${ms}`, ms + 5000), cleanup };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/**
 * One request on a new connection each time: nginx closes idle keep-alive connections at every
 * reload, and a request sent into one that is being closed would fail for a reason the suite
 * does not test.
 */
function request(url = "/", timeout = 5000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: PROXY_PORT, path: url, agent: false, timeout, headers: { connection: "close" } }, (response) => {
      response.resume();
      response.on("end", () => {
        const id = response.headers["x-instance-id"];
        resolve(response.statusCode === 200 && typeof id === "string" ? id : undefined);
      });
      response.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(undefined));
  });
}

/** The site config a user writes once, with its nodrop lines (see examples/wsgi-fleet's nginxConfText). */
function nginxConf(input: { dir: string; includeFile: string; pidFile: string; errorLog: string }): string {
  return testNginxConf({
    ...input,
    listen: `127.0.0.1:${PROXY_PORT}`,
    app: APP,
    shutdownTimeout: "10s",
    locationLines: [`add_header Set-Cookie $nodrop_${APP}_cookie always;`, "proxy_connect_timeout 2s;"],
  });
}

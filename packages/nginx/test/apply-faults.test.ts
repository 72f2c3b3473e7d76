// Issue 14, item 2: a proxy change is either done or undone, and the error says which routing is
// in force. nginx runs on this machine (a user-owned prefix) in front of three node:http backends;
// the adapter drives it over a REAL SSH connection to a real sshd (@nodrop/testhosts), through a
// TCP relay the test cuts at one point of apply(): after the write, during `nginx -t`, after the
// reload signal, during the drain poll (also one left running in the background), and at the restore. The hosts share this machine's disk
// and process table, so the sshd host's commands act on this nginx.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type ExecOptions, type ExecResult, type Executor, NodropError, type ProxyInstance, type Routing, schema, singlePool, sleep } from "@nodrop/core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { sshExecutor } from "../../ssh/dist/index.js";
import { type TcpRelay, type TestHosts, startTestHosts, stopNginx, tcpRelay, testNginxConf } from "../../testhosts/dist/index.js";
import { nginxOptionsSchema, nginxProxy, renderNginxConfig } from "../src/index.js";

const run = promisify(execFile);
const PROXY_PORT = 18751;
const PORTS = [8751, 8752, 8753];
const APP = "faults";
const instances: ProxyInstance[] = PORTS.map((port) => ({ id: `b-${port}`, host: "proxy", address: "127.0.0.1", port, version: "v1" }));
const all = singlePool(instances.map((i) => i.id));
// The change under test takes b-8753 out of the pool.
const without3 = singlePool(["b-8751", "b-8752"]);

let hosts: TestHosts;
let relay: TcpRelay;
let dir: string;
let conf: string;
let includeFile: string;
let pidFile: string;
const servers: http.Server[] = [];
/** Requests to /slow wait here until the test lets them go. */
const held: (() => void)[] = [];

/** A rule of the watching executor: when a command matches, rewrite it and/or cut the connection while it runs. */
interface Rule {
  match: (command: string) => boolean;
  /** Rewrites the command (e.g. holds it open after it did its work, so the cut lands while it runs). */
  rewrite?: (command: string) => string;
  /** Instead of running it: this result (a command that fails on the host). */
  result?: ExecResult;
  /** Cut once this resolves (default: 300 ms after the command started). */
  cutWhen?: () => Promise<void>;
  cut?: boolean;
}

/** The real SSH executor, wrapped: it watches the command text and cuts the relay at the rule's point. Each rule fires once. */
function watching(inner: Executor, rules: Rule[], seen: string[]): Executor {
  const pending = [...rules];
  return {
    name: inner.name,
    host: inner.host,
    async exec(command: string, options?: ExecOptions) {
      seen.push(command);
      const index = pending.findIndex((r) => r.match(command));
      if (index < 0) return inner.exec(command, options);
      const rule = pending.splice(index, 1)[0]!;
      if (rule.result) return rule.result;
      const running = inner.exec(rule.rewrite ? rule.rewrite(command) : command, options);
      if (rule.cut !== false) {
        void (rule.cutWhen ? rule.cutWhen() : sleep(300)).then(() => relay.cut());
      }
      return running;
    },
    dispose: () => inner.dispose?.() ?? Promise.resolve(),
  };
}

const isWrite = (c: string) => c.includes('cat > "$t"');
const isTest = (c: string) => c.includes(" -t 2>&1");
const isReload = (c: string) => c.includes("-s reload");
const isWorkers = (c: string) => c.includes("ps -o pid=,args=");
/** Keeps a command running (its exit code kept) after it did its work. */
const holdOpen = (c: string) => `${c}\nr=$?; sleep 3; exit $r`;

function proxyOver(rules: Rule[], seen: string[] = []) {
  const ssh = sshExecutor({
    name: "proxy",
    address: "127.0.0.1",
    port: relay.port,
    user: "root",
    privateKey: hosts.pemKey.privateKey,
    hostKeys: { fingerprints: [hosts.host("proxy").fingerprint] },
    connectAttempts: 3,
  });
  const options = schema.parseOrThrow(
    nginxOptionsSchema,
    { configFile: includeFile, prefix: dir, conf, pidFile, errorLog: path.join(dir, "logs", "error.log"), drainTimeout: "20s", confirmTimeout: "5s" },
    "proxy",
  );
  return { proxy: nginxProxy({ ...options, app: APP, executor: watching(ssh, rules, seen) }), ssh, seen };
}

const renderText = (routing: Routing, generation: number) => renderNginxConfig({ name: APP, routing, instances, generation, versionCookie: "nodrop_version" });

const nginx = (...args: string[]) => run("nginx", ["-p", dir, "-c", conf, ...args]);

/** Which backends answer through nginx, each request on a new connection. */
async function reached(count = 30): Promise<Set<string>> {
  const ids = new Set<string>();
  for (let i = 0; i < count; i++) {
    const id = await request("/");
    if (id) ids.add(id);
  }
  return ids;
}

function request(pathname: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: PROXY_PORT, path: pathname, agent: false, timeout: 30_000, headers: { connection: "close" } }, (response) => {
      response.resume();
      response.on("end", () => resolve(response.statusCode === 200 ? (response.headers["x-instance-id"] as string) : undefined));
      response.on("error", () => resolve(undefined));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(undefined));
  });
}

async function workerPids(): Promise<string> {
  const pid = (await readFile(pidFile, "utf8")).trim();
  return (await run("ps", ["-o", "pid=,args=", "--ppid", pid])).stdout;
}

async function leftovers(): Promise<string[]> {
  return (await readdir(path.dirname(includeFile))).filter((f) => /\.nodrop-(tmp|prev)\./.test(f));
}

async function failure(promise: Promise<unknown>): Promise<NodropError> {
  try {
    await promise;
  } catch (error) {
    if (NodropError.is(error)) return error;
    throw error;
  }
  throw new Error("expected apply() to fail");
}

/** What a test asserts afterwards: nginx -t passes, the file is `text`, nginx routes to `expected`, no temp files are left. */
async function expectInForce(text: string, expected: readonly string[]) {
  await expect(nginx("-t")).resolves.toBeDefined();
  expect(await readFile(includeFile, "utf8")).toBe(text);
  // Any generation that could route by another routing has stopped taking new connections by now.
  expect([...(await reached())].sort()).toEqual([...expected].sort());
  expect(await leftovers()).toEqual([]);
}

beforeAll(async () => {
  hosts = await startTestHosts({ names: ["proxy"] });
  relay = await tcpRelay(hosts.host("proxy").address, hosts.host("proxy").sshPort);
  dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-nginx-faults-"));
  for (const sub of ["nodrop", "logs", "tmp"]) await mkdir(path.join(dir, sub), { recursive: true });
  conf = path.join(dir, "nginx.conf");
  includeFile = path.join(dir, "nodrop", `${APP}.conf`);
  pidFile = path.join(dir, "nginx.pid");
  for (const instance of instances) {
    const server = http.createServer((req, response) => {
      req.resume();
      const answer = () => {
        response.writeHead(200, { "content-type": "text/plain", "x-instance-id": instance.id });
        response.end(instance.id);
      };
      if (req.url === "/slow") held.push(answer);
      else answer();
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
      shutdownTimeout: "60s",
      locationLines: ["proxy_connect_timeout 2s;", "proxy_read_timeout 60s;"],
    }),
  );
  await writeFile(includeFile, renderText(all, 1));
  await nginx();
  for (let i = 0; (await request("/")) === undefined; i++) {
    if (i > 100) throw new Error("nginx does not answer");
    await sleep(50);
  }
});

afterAll(async () => {
  for (const answer of held.splice(0)) answer();
  await stopNginx(pidFile);
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  await relay?.close();
  await hosts?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// Every case starts from the same place: the whole pool, in force on disk and in nginx.
let before: string;
beforeEach(async () => {
  before = renderText(all, 1);
  await writeFile(includeFile, before);
  await nginx("-s", "reload");
  await sleep(500);
  expect([...(await reached())].sort()).toEqual(instances.map((i) => i.id));
});
afterEach(async () => {
  for (const answer of held.splice(0)) answer();
});

describe("nginx apply() over SSH, the connection cut at each point: the error says which routing is in force, and it is", () => {
  it("cut after the write (its result lost): the previous file is restored, nginx not reloaded → previous", async () => {
    const workersBefore = await workerPids();
    const { proxy, ssh } = proxyOver([
      {
        match: isWrite,
        rewrite: holdOpen,
        // Cut once the new file is in place: the write did its work, its answer never arrives.
        cutWhen: async () => {
          for (let i = 0; i < 100 && (await readFile(includeFile, "utf8")) === before; i++) await sleep(20);
        },
      },
    ]);
    const error = await failure(proxy.apply(without3, instances));
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("previous");
    expect(error.message).toMatch(/was restored and nginx was not reloaded/);
    expect(await workerPids()).toBe(workersBefore);
    await expectInForce(before, ["b-8751", "b-8752", "b-8753"]);
  });

  it("cut after the write and the restore fails on the host: nginx was never reloaded → previous, and the message says the file may hold the new routing", async () => {
    const workersBefore = await workerPids();
    // Rules are used once, in order: the first write is the change, the second the restore.
    const { proxy, ssh } = proxyOver([
      {
        match: isWrite,
        rewrite: holdOpen,
        cutWhen: async () => {
          for (let i = 0; i < 100 && (await readFile(includeFile, "utf8")) === before; i++) await sleep(20);
        },
      },
      { match: isWrite, result: { code: 1, stdout: "", stderr: "No space left on device", durationMs: 1 }, cut: false },
    ]);
    const error = await failure(proxy.apply(without3, instances));
    expect(error.routingInForce).toBe("previous");
    expect(error.message).not.toMatch(/was restored/);
    expect(error.message).toMatch(/may hold the new one, which the next reload would load/);
    expect(await workerPids()).toBe(workersBefore);
    // nginx still routes by the previous routing; the file holds the new one. Put it back for the next case.
    const text = await readFile(includeFile, "utf8");
    expect(text).not.toBe(before);
    await ssh.dispose();
    await writeFile(includeFile, before);
    await expectInForce(before, ["b-8751", "b-8752", "b-8753"]);
  });

  it("cut during nginx -t: the previous file is restored, nginx not reloaded → previous", async () => {
    const workersBefore = await workerPids();
    const { proxy, ssh } = proxyOver([{ match: isTest, rewrite: (c) => `sleep 2; ${c}` }]);
    const error = await failure(proxy.apply(without3, instances));
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("previous");
    expect(await workerPids()).toBe(workersBefore);
    await expectInForce(before, ["b-8751", "b-8752", "b-8753"]);
  });

  it("cut after the reload signal: the file is restored AND nginx reloaded with it, a new generation confirmed → previous", async () => {
    const { proxy, ssh, seen } = proxyOver([{ match: isReload, rewrite: holdOpen }]);
    const error = await failure(proxy.apply(without3, instances));
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("previous");
    expect(error.message).toMatch(/restored and nginx reloaded with it/);
    // Two reloads ran: the one cut, and the one that put the previous routing back into nginx.
    expect(seen.filter(isReload)).toHaveLength(2);
    await expectInForce(before, ["b-8751", "b-8752", "b-8753"]);
  });

  it("cut during the drain poll (a slow request holds an old worker): the new routing took effect → new", async () => {
    // A request in flight on the current generation keeps one of its workers alive after the reload.
    const slow = request("/slow");
    for (let i = 0; held.length === 0 && i < 200; i++) await sleep(10);
    expect(held).toHaveLength(1);
    let reloaded = false;
    let drainPolls = 0;
    const { proxy, ssh } = proxyOver([
      {
        // The third worker listing after the reload was confirmed (after the error log was read) is a drain poll.
        match: (c) => {
          if (isReload(c)) reloaded = true;
          if (reloaded && c.startsWith("tail -c")) drainPolls = 1;
          else if (drainPolls > 0 && isWorkers(c)) drainPolls += 1;
          return drainPolls >= 4;
        },
        rewrite: (c) => `sleep 2; ${c}`,
      },
    ]);
    const error = await failure(proxy.apply(without3, instances));
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("new");
    expect(error.message).toMatch(/new routing is in force/);
    for (const answer of held.splice(0)) answer();
    expect(await slow).toBeDefined();
    const text = await readFile(includeFile, "utf8");
    expect(text).toContain("# nodrop-generation: 2");
    await expectInForce(text, ["b-8751", "b-8752"]);
  });

  it("cut during a background drain (a slow request holds an old worker): apply() resolved with the new routing in force, and `drained` rejects as dropped, saying it still is", async () => {
    const slow = request("/slow");
    for (let i = 0; held.length === 0 && i < 200; i++) await sleep(10);
    expect(held).toHaveLength(1);
    // Only the drain's polls after apply() returned: a cut there can no longer fail apply() itself.
    let returned = false;
    const { proxy, ssh } = proxyOver([{ match: (c) => returned && c.includes("ps -o pid=,args= -p "), rewrite: (c) => `sleep 2; ${c}` }]);
    const result = await proxy.apply(without3, instances, { backgroundDrain: true });
    returned = true;
    expect(result.drainMs).toBe(0);
    expect(result.drained).toBeDefined();
    // New connections already go by the new routing, while the old worker holds the slow request.
    expect([...(await reached())].sort()).toEqual(["b-8751", "b-8752"]);
    const error = await failure(result.drained!);
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("new");
    expect(error.message).toMatch(/new routing is in force/);
    for (const answer of held.splice(0)) answer();
    expect(await slow).toBeDefined();
    const text = await readFile(includeFile, "utf8");
    expect(text).toContain("# nodrop-generation: 2");
    await expectInForce(text, ["b-8751", "b-8752"]);
  });

  it("cut after the reload signal and the restore fails on the host → unknown, never 'restored'; current() does not vouch for the file until a change is confirmed", async () => {
    let writes = 0;
    const { proxy, ssh } = proxyOver([
      { match: isReload, rewrite: holdOpen },
      // The second write is the restore: it fails on the host (a full disk, say).
      { match: (c) => isWrite(c) && ++writes === 2, result: { code: 1, stdout: "", stderr: "No space left on device", durationMs: 1 }, cut: false },
    ]);
    const error = await failure(proxy.apply(without3, instances));
    expect(error.routingInForce).toBe("unknown");
    expect(error.message).not.toMatch(/was restored|restored and/);
    expect(error.message).toMatch(/putting back the previous .* failed \(No space left on device\)/);
    // The engine reads the routing back when unknown: the adapter cannot tell, so it says so rather
    // than vouch for the file (which here holds the new routing, and nginx happens to route by it).
    await expect(proxy.current()).rejects.toMatchObject({ routingInForce: "unknown" });
    await ssh.dispose();
    const text = await readFile(includeFile, "utf8");
    await expectInForce(text, ["b-8751", "b-8752"]);
    // A next process (this one's memory gone) learns it from the record beside the file: the file
    // holds the new routing, and nginx may still route by the one before it.
    const next = proxyOver([]);
    expect(await next.proxy.current()).toEqual(without3);
    expect(await next.proxy.alsoInForce!()).toEqual([all]);
    await next.ssh.dispose();
  });

  it("cut after the reload signal, then again at the restore → unknown, never 'restored'", async () => {
    let writes = 0;
    const { proxy, ssh } = proxyOver([
      { match: isReload, rewrite: holdOpen },
      { match: (c) => isWrite(c) && ++writes === 2, rewrite: (c) => `sleep 2; ${c}` },
    ]);
    const error = await failure(proxy.apply(without3, instances));
    await ssh.dispose();
    expect(error.code).toBe("E_SSH_DROPPED");
    expect(error.routingInForce).toBe("unknown");
    expect(error.message).not.toMatch(/was restored|restored and/);
    await expect(nginx("-t")).resolves.toBeDefined();
    // The cut restore may still land on the host afterwards (it runs on without its connection).
    await sleep(2500);
    expect(await leftovers()).toEqual([]);
  });

  it("stale .nodrop-prev. and .nodrop-tmp. files of a crashed run are swept by the next write", async () => {
    await writeFile(`${includeFile}.nodrop-prev.AbCdEf1234`, before);
    await writeFile(`${includeFile}.nodrop-tmp.ZyXwVu9876`, "half");
    const { proxy, ssh } = proxyOver([]);
    await proxy.apply(without3, instances);
    await ssh.dispose();
    expect(await leftovers()).toEqual([]);
  });
});

import http from "node:http";
import type { OutgoingHttpHeaders } from "node:http";
import { performance } from "node:perf_hooks";
import { clientSeed, mulberry32 } from "./prng.js";
import { CookieJar, type ExchangeResult, type ExchangeTarget, dropIdleSockets, exchange } from "@nodrop/core/http";
import { summarize } from "./stats.js";
import type { LoadOptions, LoadResult, LoadRun, RequestKind, RequestRecord } from "./types.js";

const DEFAULT_DURATION_MS = 60_000;

interface Target {
  hostname: string;
  port: number;
  prefix: string;
}

interface Settings {
  /** Where the clients send: client i to targets[i % targets.length]. */
  targets: Target[];
  clients: number;
  durationMs: number;
  maxRequests: number;
  postRatio: number;
  slowRatio: number;
  slowMs: number;
  path: string;
  versionHeader: string;
  instanceHeader: string;
  localAddresses: string[];
  cookies: boolean;
  requestTimeoutMs: number;
  retry: "browser" | "idempotent";
  seed: number;
}

function ratio(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < 0 || v > 1) throw new RangeError(`loadgen: ${name} must be between 0 and 1, got ${v}`);
  return v;
}

function positive(name: string, value: number, integer: boolean): number {
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new RangeError(`loadgen: ${name} must be a positive ${integer ? "integer" : "number"}, got ${value}`);
  }
  return value;
}

function parseTarget(url: string): Target {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new TypeError(`loadgen: invalid url ${JSON.stringify(url)}`);
  }
  if (base.protocol !== "http:") throw new TypeError(`loadgen: only http: URLs are supported, got ${url}`);
  return { hostname: base.hostname.replace(/^\[(.*)\]$/, "$1"), port: base.port === "" ? 80 : Number(base.port), prefix: base.pathname.replace(/\/+$/, "") };
}

function resolveSettings(o: LoadOptions): Settings {
  const urls = o.urls ?? [o.url];
  if (urls.length === 0) throw new TypeError("loadgen: urls must name at least one URL");
  const targets = urls.map(parseTarget);
  if (o.durationMs === undefined && o.maxRequests === undefined) {
    throw new TypeError("loadgen: durationMs or maxRequests is required");
  }
  const path = o.path ?? "/";
  if (!path.startsWith("/")) throw new TypeError(`loadgen: path must start with "/", got ${path}`);
  const postRatio = ratio("postRatio", o.postRatio, 0.1);
  const slowRatio = ratio("slowRatio", o.slowRatio, 0.1);
  if (postRatio + slowRatio > 1) throw new RangeError("loadgen: postRatio + slowRatio must not exceed 1");
  const slowMs = o.slowMs ?? 500;
  if (!Number.isFinite(slowMs) || slowMs < 0) throw new RangeError(`loadgen: slowMs must be >= 0, got ${slowMs}`);
  return {
    targets,
    clients: positive("clients", o.clients, true),
    durationMs: positive("durationMs", o.durationMs ?? DEFAULT_DURATION_MS, false),
    maxRequests: o.maxRequests === undefined ? Infinity : positive("maxRequests", o.maxRequests, true),
    postRatio,
    slowRatio,
    slowMs,
    path,
    versionHeader: (o.versionHeader ?? "x-app-version").toLowerCase(),
    instanceHeader: (o.instanceHeader ?? "x-app-instance").toLowerCase(),
    localAddresses: o.localAddresses ?? [],
    cookies: o.cookies ?? true,
    requestTimeoutMs: positive("requestTimeoutMs", o.requestTimeoutMs ?? 30_000, false),
    retry: o.retry ?? "browser",
    seed: (o.seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0,
  };
}

function headerValue(value: string | string[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  return v === undefined || v === "" ? undefined : v;
}

/**
 * Starts the load right away. `clients` loops each send one request at a time (no think time) on
 * their own keep-alive connection until the duration, maxRequests, stop() or the signal ends the
 * run; in-flight requests then finish (bounded by requestTimeoutMs) and `done` resolves.
 */
export function startLoad(options: LoadOptions): LoadRun {
  const s = resolveSettings(options);
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const records: RequestRecord[] = [];
  // Versions, instances and error codes repeat a lot: keep one copy of each string.
  const interned = new Map<string, string>();
  const intern = (v: string | undefined): string | undefined => {
    if (v === undefined) return undefined;
    const known = interned.get(v);
    if (known !== undefined) return known;
    if (interned.size < 10_000) interned.set(v, v);
    return v;
  };

  let stopped = false;
  let started = 0;
  const stop = () => {
    stopped = true;
  };
  const timer = setTimeout(stop, s.durationMs);
  const onAbort = () => stop();
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  const acquire = (): boolean => {
    if (stopped) return false;
    if (started >= s.maxRequests) {
      stop();
      return false;
    }
    started++;
    return true;
  };

  const runClient = async (client: number): Promise<void> => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const jar = s.cookies ? new CookieJar() : undefined;
    const random = mulberry32(clientSeed(s.seed, client));
    const localAddress = s.localAddresses.length > 0 ? s.localAddresses[client % s.localAddresses.length] : undefined;
    // Each client keeps to one proxy, as a client of DNS round robin does.
    const to = s.targets[client % s.targets.length]!;
    let seq = 0;
    try {
      while (acquire()) {
        const r = random();
        const kind: RequestKind = r < s.postRatio ? "post" : r < s.postRatio + s.slowRatio ? "slow" : "get";
        const start = now();
        const deadline = start + s.requestTimeoutMs;
        const send = (): Promise<ExchangeResult> => {
          // Each client its own agent string, as browsers differ: a split keyed on address and agent (a canary's) tells them apart.
          const headers: OutgoingHttpHeaders = { accept: "*/*", "user-agent": `nodrop-loadgen/${client}` };
          const cookie = jar?.header();
          if (cookie !== undefined) headers.cookie = cookie;
          const target: ExchangeTarget = {
            hostname: to.hostname,
            port: to.port,
            method: kind === "post" ? "POST" : "GET",
            path: to.prefix + (kind === "post" ? "/submit" : kind === "slow" ? `/slow?ms=${s.slowMs}` : s.path),
            headers,
          };
          if (kind === "post") {
            target.body = JSON.stringify({ client, seq, at: Math.round(start) });
            headers["content-type"] = "application/json";
            headers["content-length"] = Buffer.byteLength(target.body);
          }
          if (localAddress !== undefined) target.localAddress = localAddress;
          return exchange(agent, target, deadline - now());
        };
        seq++;
        let result = await send();
        let retried = false;
        // A request whose reused keep-alive socket was closed before any response byte is retried
        // once on a fresh connection. "browser" (Chromium, curl) does so for every method: nginx
        // closed the idle connection without reading the request. "idempotent" (Go) never resends a POST.
        if (result.staleSocket && (s.retry === "browser" || kind !== "post") && deadline - now() > 0) {
          retried = true;
          dropIdleSockets(agent);
          result = await send();
        }
        jar?.store(result.headers?.["set-cookie"]);
        const record: RequestRecord = { client, kind, start, end: now(), status: result.status, retried };
        const version = intern(headerValue(result.headers?.[s.versionHeader]));
        const instance = intern(headerValue(result.headers?.[s.instanceHeader]));
        const error = intern(result.error);
        if (version !== undefined) record.version = version;
        if (instance !== undefined) record.instance = instance;
        if (error !== undefined) record.error = error;
        records.push(record);
      }
    } finally {
      agent.destroy();
    }
  };

  // Wait for every client (even when one of them failed unexpectedly) before settling.
  const clients = Array.from({ length: s.clients }, (_, i) =>
    runClient(i).catch((err: unknown) => {
      stop();
      throw err;
    }),
  );
  const done = Promise.allSettled(clients).then((results): LoadResult => {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    const durationMs = now();
    for (const r of results) if (r.status === "rejected") throw r.reason;
    return { stats: summarize(records, durationMs, s.clients), records };
  });

  return { stop, done, completed: () => records.length };
}

/** Runs a load to its end: `startLoad(options).done`. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  return startLoad(options).done;
}

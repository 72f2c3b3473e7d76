/** Options of {@link startLoad} / {@link runLoad}. */
export interface LoadOptions {
  /** Base URL, e.g. `http://127.0.0.1:18080` (a path prefix is kept: `http://h/app` sends `/app/slow?...`). */
  url: string;
  /**
   * Several entry points to the same site (proxies behind DNS round robin): client i sends to
   * urls[i % urls.length], and keeps to it. `url` is then only the default of this list.
   */
  urls?: readonly string[];
  /** Concurrent clients, each with its own keep-alive connection (maxSockets 1) and its own cookie jar. */
  clients: number;
  /** Stop after this long. Always a hard cap: defaults to 60000 when only maxRequests is given. */
  durationMs?: number;
  /** Stop after this many requests in total (whichever of durationMs/maxRequests comes first). */
  maxRequests?: number;
  /** Share of `POST /submit` requests with a small JSON body. Default 0.1. */
  postRatio?: number;
  /** Share of `GET /slow?ms=<slowMs>` requests. Default 0.1. */
  slowRatio?: number;
  /** Default 500. */
  slowMs?: number;
  /** Path of normal GETs. Default "/". */
  path?: string;
  /** Response header naming the version that answered. Default "x-app-version". */
  versionHeader?: string;
  /** Response header naming the instance that answered. Default "x-app-instance". */
  instanceHeader?: string;
  /** Client i binds its connections to localAddresses[i % length] as source address. */
  localAddresses?: string[];
  /** Cookie jar per client. Default true. */
  cookies?: boolean;
  /** Default 30000; covers the whole request (including the one retry and reading the body). A timeout is a failure. */
  requestTimeoutMs?: number;
  /**
   * Which requests are resent once when their reused keep-alive socket was closed before any
   * response byte: "browser" (default; Chromium and curl resend any method, the server had not
   * read it) or "idempotent" (Go's client: never a POST). Stats report both counts either way.
   */
  retry?: "browser" | "idempotent";
  /** Stop early: no new requests, in-flight ones finish, then `done` resolves. */
  signal?: AbortSignal;
  /** Seed of the PRNG choosing request kinds (each client gets its own stream derived from it). */
  seed?: number;
}

export type RequestKind = "get" | "post" | "slow";

export interface RequestRecord {
  client: number;
  kind: RequestKind;
  /** ms since load start (performance.now based), when the request (first attempt) was started. */
  start: number;
  /** ms since load start, when the final attempt completed (body fully read, or failed). */
  end: number;
  /** HTTP status of the final attempt; 0 when no response arrived. */
  status: number;
  version?: string;
  instance?: string;
  /** Error code (e.g. ECONNRESET, ETIMEDOUT, ECONNREFUSED, EABORTED) when the final attempt failed without a complete response. */
  error?: string;
  /** True when the request was retried once because its reused keep-alive socket was closed before any response byte. */
  retried: boolean;
}

export interface LoadStats {
  requests: number;
  ok: number;
  /** As users see it: after the one allowed retry; any error or non-2xx. */
  failed: number;
  /** Failures under Go's rule, which never resends a POST (= failed + POSTs saved by a resend). */
  strictFailed: number;
  /** Failures before the retry would have hidden them (= failed + retried-and-recovered). */
  rawFailed: number;
  /** Requests retried once because a reused keep-alive socket was closed before any response byte. */
  retried: number;
  /** Of those, POSTs. */
  retriedPost: number;
  durationMs: number;
  rps: number;
  byVersion: Record<string, number>;
  byStatus: Record<string, number>;
  /** A client got version X and a request it started after that response completed got an older version. */
  versionRegressions: number;
  /** Requests started after the first response of the newest version completed, but answered by an older version. */
  lateOld: number;
  /** Completion time (ms) of the first response of the newest version. */
  firstNewAt?: number;
  /** Completion time (ms) of the last response of an older version. */
  lastOldAt?: number;
  /** Failure kind (error code, or `http_<status>`) -> count, for failed requests. */
  errors: Record<string, number>;
  /** Per client: how often the answering instance changed between consecutive successful responses. */
  switchesPerClient: number[];
}

export interface LoadResult {
  stats: LoadStats;
  records: RequestRecord[];
}

export interface LoadRun {
  /** Stop starting new requests; in-flight ones finish, then `done` resolves. Idempotent. */
  stop(): void;
  done: Promise<LoadResult>;
  /** Requests completed so far (for a caller that runs until a count is reached). */
  completed(): number;
}

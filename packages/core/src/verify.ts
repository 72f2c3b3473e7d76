import http from "node:http";
import https from "node:https";
import { CookieJar } from "./cookie-jar.js";
import { sleep } from "./duration.js";
import { NodropError } from "./errors.js";
import { type ExchangeResult, dropIdleSockets, exchange } from "./http-exchange.js";
import type { VerifyReport } from "./report.js";
import { isSafeName } from "./template.js";
import type { DeployVerifier } from "./types.js";

export interface HttpVerifierOptions {
  /** The public URL, through the proxy, as users reach the site. */
  url: string;
  /** Requests started per second. */
  ratePerSecond: number;
  /** Keep the cookies the site sets, as a browser does (a version pin is a cookie). */
  cookies: boolean;
  /** Response header that names the version that answered. */
  versionHeader: string;
  /** Per request; a request without a complete answer by then is a failure. */
  timeoutMs: number;
  /** Keeps probing this long after the last step, so a late failure is still counted. */
  settleMs: number;
  /** More failed requests than this fail the deploy. */
  maxFailed: number;
  /** More version regressions than this fail the deploy (unlimited when absent). */
  maxRegressions?: number | undefined;
  /** Most requests in flight at once (default 4): a slow answer must not stop the probe. */
  concurrency?: number;
  /**
   * true (default): the thresholds stop the deploy and the site must answer before it starts.
   * false: only counts, for a rollback or a fix of a site that already fails.
   */
  enforce?: boolean;
}

/** What is wrong with a verify URL, if anything. Credentials are refused: the URL appears in reports and logs. */
export function verifyUrlProblem(raw: string): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Not a URL, but it may still carry credentials (`http://user:pw@[bad`): never echo them.
    const shown = raw.replace(/^([^/?#]*\/\/)[^/?#]*@/, "$1***@");
    return `expected an http:// or https:// URL, got ${JSON.stringify(shown.length > 80 ? `${shown.slice(0, 80)}…` : shown)}${shown === raw ? "" : " (credentials hidden)"}`;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return `expected an http:// or https:// URL, got a ${url.protocol} URL`;
  if (url.username || url.password) return "credentials in the URL are not supported (they would appear in reports)";
  return undefined;
}

/**
 * Sends its own requests through the proxy for the whole deploy, like one browser, and counts what
 * users would have seen: failures (after the one resend browsers make on a stale keep-alive
 * connection) and regressions (an answer from another version after one from the deployed version).
 */
export function httpVerifier(options: HttpVerifierOptions): DeployVerifier {
  const problem = verifyUrlProblem(options.url);
  if (problem) throw new NodropError("E_CONFIG", `verify.url: ${problem}`);
  const url = new URL(options.url);
  const secure = url.protocol === "https:";
  // The report names the page probed, never its query string, which may carry a token.
  const shown = `${url.origin}${url.pathname}`;
  const header = options.versionHeader.toLowerCase();
  const concurrency = options.concurrency ?? 4;
  const enforce = options.enforce ?? true;
  const agent = secure ? new https.Agent({ keepAlive: true, maxSockets: concurrency }) : new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const jar = options.cookies ? new CookieJar() : undefined;

  const counts = { requests: 0, ok: 0, failed: 0, resent: 0, regressions: 0 };
  // Keyed by what instances report: no prototype, so a version named `constructor` is a key like any other.
  const byVersion: Record<string, number> = Object.create(null) as Record<string, number>;
  const errors: Record<string, number> = Object.create(null) as Record<string, number>;
  let target = "";
  let started = 0;
  /** When the first answer from the deployed version completed (ms since start). */
  let newSeenAt: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const inFlight = new Set<Promise<void>>();

  const now = () => performance.now() - started;
  /** A complete 2xx or 3xx answer: what a user would take as the page. */
  const answered = (result: ExchangeResult) => result.error === undefined && result.status >= 200 && result.status < 400;
  const send = (): Promise<ExchangeResult> => {
    const headers: http.OutgoingHttpHeaders = { accept: "*/*", "user-agent": "nodrop-verify" };
    const cookie = jar?.header();
    if (cookie !== undefined) headers.cookie = cookie;
    return exchange(agent, { protocol: url.protocol as "http:" | "https:", hostname: url.hostname, port: Number(url.port || (secure ? 443 : 80)), method: "GET", path: `${url.pathname}${url.search}`, headers }, options.timeoutMs);
  };
  const probeOnce = async (): Promise<ExchangeResult> => {
    const t0 = now();
    let result = await send();
    if (result.staleSocket) {
      // The proxy closed an idle connection (nginx does at every reload) before reading the request:
      // browsers resend it once on a new connection, and so does the probe.
      counts.resent += 1;
      dropIdleSockets(agent);
      result = await send();
    }
    jar?.store(result.headers?.["set-cookie"]);
    const raw = result.headers?.[header];
    // An instance is not trusted: a version that is not a safe version string counts as unknown.
    const reported = Array.isArray(raw) ? raw[0] : raw;
    const version = isSafeName(reported) ? reported : undefined;
    counts.requests += 1;
    if (answered(result)) {
      counts.ok += 1;
      byVersion[version ?? "unknown"] = (byVersion[version ?? "unknown"] ?? 0) + 1;
      if (version === target && newSeenAt === undefined) newSeenAt = now();
      else if (version !== undefined && version !== target && newSeenAt !== undefined && t0 > newSeenAt) counts.regressions += 1;
    } else {
      counts.failed += 1;
      const kind = result.error ?? `http_${result.status}`;
      errors[kind] = (errors[kind] ?? 0) + 1;
    }
    return result;
  };
  const track = (promise: Promise<unknown>) => {
    const done = promise.then(() => undefined);
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  };

  const crossed = (): string | undefined => {
    if (counts.failed > options.maxFailed) return `verify: ${counts.failed} of ${counts.requests} requests to ${shown} failed (allowed: ${options.maxFailed}; ${describe(errors)})`;
    if (options.maxRegressions !== undefined && counts.regressions > options.maxRegressions) {
      return `verify: ${counts.regressions} requests to ${shown} were answered by another version after ${target} had answered (allowed: ${options.maxRegressions})`;
    }
    return undefined;
  };
  const breach = () => (enforce ? crossed() : undefined);

  return {
    url: shown,
    async start({ version }) {
      target = version;
      started = performance.now();
      // The site must answer before anything changes: a wrong URL must not fail a deploy halfway.
      const first = await probeOnce();
      if (enforce && !answered(first)) {
        agent.destroy();
        throw new NodropError(
          "E_VERIFY",
          `verify: ${shown} does not answer before the deploy (${first.error ?? `status ${first.status}`}); nothing was changed. A deploy cannot be judged on a site that already fails: fix the URL, or use --verify report to deploy a fix`,
        );
      }
      timer = setInterval(() => {
        if (inFlight.size < concurrency) track(probeOnce());
      }, 1000 / options.ratePerSecond);
    },
    breach,
    async stop() {
      if (timer) {
        await sleep(options.settleMs);
        clearInterval(timer);
        timer = undefined;
      }
      await Promise.all(inFlight);
      agent.destroy();
      const problem = breach();
      return {
        url: shown,
        requests: counts.requests,
        ok: counts.ok,
        failed: counts.failed,
        resent: counts.resent,
        regressions: counts.regressions,
        byVersion: { ...byVersion },
        errors: { ...errors },
        durationMs: started === 0 ? 0 : now(),
        maxFailed: options.maxFailed,
        enforced: enforce,
        ...(options.maxRegressions === undefined ? {} : { maxRegressions: options.maxRegressions }),
        ...(problem ? { breach: problem } : {}),
      } satisfies VerifyReport;
    },
  };
}

function describe(errors: Record<string, number>): string {
  return Object.entries(errors)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${kind} ${n}`)
    .join(", ");
}

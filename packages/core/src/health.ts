import http from "node:http";
import type { Executor } from "./executor.js";
import { sleep } from "./duration.js";
import { NodropError, abortError } from "./errors.js";
import { describeValue, isSafeName, shellQuote } from "./template.js";
import type { HealthCheck, HealthProbe, InstanceSpec } from "./types.js";

export interface HttpHealthCheckOptions {
  /** Path probed on the instance itself, not through the proxy. */
  path: string;
  /** Response header carrying the version the instance runs. */
  versionHeader: string;
  /** Per probe. */
  timeoutMs: number;
}

/** Probes http://address:port/path directly and reads the version header. */
export function httpHealthCheck(options: HttpHealthCheckOptions): HealthCheck {
  const header = options.versionHeader.toLowerCase();
  return {
    probe(instance, signal) {
      return new Promise<HealthProbe>((resolve) => {
        const request = http.get(
          {
            host: instance.address,
            port: instance.port,
            path: options.path,
            agent: false,
            timeout: options.timeoutMs,
            signal,
            headers: { "user-agent": "nodrop-healthcheck", connection: "close" },
          },
          (response) => {
            response.resume();
            response.on("end", () => {
              const raw = response.headers[header];
              const status = response.statusCode ?? 0;
              const seen = reportedVersion(Array.isArray(raw) ? raw[0] : raw, options.versionHeader);
              resolve({ ok: status >= 200 && status < 300, version: seen.version, detail: `status ${status}, ${seen.detail}` });
            });
            response.on("error", (error) => resolve({ ok: false, version: undefined, detail: error.message }));
          },
        );
        request.on("timeout", () => request.destroy(new Error(`no answer within ${options.timeoutMs}ms`)));
        request.on("error", (error: NodeJS.ErrnoException) =>
          resolve({ ok: false, version: undefined, detail: error.code === "ECONNREFUSED" ? "connection refused" : error.message }),
        );
      });
    },
  };
}

/**
 * What an instance reported as its version. The instance is not trusted: a value that is not a safe
 * version string (SAFE_NAME) counts as an unknown version, and the detail shows it escaped and cut
 * short, so it never reaches a command, the proxy config, the journal or an output.
 */
export function reportedVersion(raw: string | undefined, headerName: string): { version: string | undefined; detail: string } {
  if (raw === undefined || raw === "") return { version: undefined, detail: `no ${headerName} header` };
  if (isSafeName(raw)) return { version: raw, detail: `${headerName}: ${raw}` };
  return { version: undefined, detail: `${headerName} ${describeValue(raw, 40)} is not a safe version string (counted as unknown)` };
}

export interface WaitHealthyOptions {
  /** Consecutive good probes needed. */
  successes: number;
  intervalMs: number;
  /** Give up after this long. */
  deadlineMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Probes until the instance reports `version` healthy `successes` times in a row.
 * Throws E_HEALTHCHECK naming the instance and what it saw last.
 */
export async function waitHealthy(
  check: HealthCheck,
  instance: InstanceSpec,
  version: string,
  options: WaitHealthyOptions,
): Promise<{ probes: number; ms: number }> {
  const started = performance.now();
  let streak = 0;
  let probes = 0;
  let last = "no probe yet";
  for (;;) {
    if (options.signal?.aborted) throw abortError(options.signal);
    const probe = await check.probe(instance, options.signal);
    probes += 1;
    last = probe.detail;
    if (probe.ok && probe.version === version) {
      streak += 1;
      if (streak >= options.successes) return { probes, ms: performance.now() - started };
    } else {
      streak = 0;
    }
    if (performance.now() - started + options.intervalMs > options.deadlineMs) {
      throw new NodropError(
        "E_HEALTHCHECK",
        `instance ${instance.id}: health check at http://${instance.address}:${instance.port} did not report ${version} healthy ${options.successes}x within ${options.deadlineMs}ms (last seen: ${last})`,
        { instance: instance.id },
      );
    }
    await sleep(options.intervalMs, options.signal).catch(() => {
      throw abortError(options.signal);
    });
  }
}

export interface HostHealthCheckOptions extends HttpHealthCheckOptions {
  /** The executor of each instance's host. */
  executorFor: (host: string) => Executor;
}

/**
 * Probes from the instance's own host, over its executor (curl), for instances that only their
 * host can reach (bound to 127.0.0.1 there, or behind a firewall).
 */
export function hostHealthCheck(options: HostHealthCheckOptions): HealthCheck {
  const header = options.versionHeader.toLowerCase();
  return {
    async probe(instance, signal) {
      const url = `http://${instance.address.includes(":") ? `[${instance.address}]` : instance.address}:${instance.port}${options.path}`;
      const seconds = (options.timeoutMs / 1000).toFixed(3);
      try {
        const result = await options
          .executorFor(instance.host)
          .exec(`curl -sS -o /dev/null -D - --max-time ${seconds} ${shellQuote(url)}`, { signal, timeoutMs: options.timeoutMs + 5000 });
        if (result.code !== 0) return { ok: false, version: undefined, detail: result.stderr.trim().split("\n").pop() || `curl exit ${result.code}` };
        const lines = result.stdout.split(/\r?\n/);
        const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(lines[0] ?? "")?.[1] ?? 0);
        const versionLine = lines.find((l) => l.toLowerCase().startsWith(`${header}:`));
        const seen = reportedVersion(versionLine?.slice(versionLine.indexOf(":") + 1).trim() || undefined, options.versionHeader);
        return { ok: status >= 200 && status < 300, version: seen.version, detail: `status ${status} (from ${instance.host}), ${seen.detail}` };
      } catch (error) {
        return { ok: false, version: undefined, detail: (error as Error).message };
      }
    },
  };
}

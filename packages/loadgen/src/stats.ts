import type { LoadStats, RequestRecord } from "./types.js";
import { compareVersions } from "./version.js";

/** A request counts as ok (as users see it) when it has a complete 2xx response and no error. */
export function isOk(record: RequestRecord): boolean {
  return record.error === undefined && record.status >= 200 && record.status < 300;
}

/** Failure kind of a failed request: its error code, or `http_<status>`. */
export function failureKind(record: RequestRecord): string {
  return record.error ?? `http_${record.status}`;
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

const byStart = (a: RequestRecord, b: RequestRecord) => a.start - b.start;
const byEnd = (a: RequestRecord, b: RequestRecord) => a.end - b.end;

/**
 * Pure summary of a run's records. `clients` sets the length of switchesPerClient (default: highest
 * client index seen + 1).
 */
export function summarize(records: readonly RequestRecord[], durationMs: number, clients?: number): LoadStats {
  let ok = 0;
  let retried = 0;
  let recovered = 0;
  let retriedPost = 0;
  let postRecovered = 0;
  const byVersion: Record<string, number> = {};
  const byStatus: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const perClient = new Map<number, RequestRecord[]>();
  let newest: string | undefined;
  let maxClient = -1;

  for (const r of records) {
    const good = isOk(r);
    if (good) ok++;
    else bump(errors, failureKind(r));
    if (r.retried) {
      retried++;
      if (good) recovered++;
      if (r.kind === "post") {
        retriedPost++;
        if (good) postRecovered++;
      }
    }
    bump(byStatus, String(r.status));
    if (r.version !== undefined) {
      bump(byVersion, r.version);
      if (newest === undefined || compareVersions(r.version, newest) > 0) newest = r.version;
    }
    let list = perClient.get(r.client);
    if (!list) perClient.set(r.client, (list = []));
    list.push(r);
    if (r.client > maxClient) maxClient = r.client;
  }

  // Regressions per client: a response older than the newest version among that client's
  // responses that had completed when the request started.
  let versionRegressions = 0;
  const switchesPerClient: number[] = new Array<number>(Math.max(clients ?? 0, maxClient + 1)).fill(0);
  for (const [client, list] of perClient) {
    const started = [...list].sort(byStart);
    const ended = [...list].sort(byEnd);
    let j = 0;
    let seen: string | undefined;
    for (const r of started) {
      for (; j < ended.length && (ended[j] as RequestRecord).end <= r.start; j++) {
        const v = (ended[j] as RequestRecord).version;
        if (v !== undefined && (seen === undefined || compareVersions(v, seen) > 0)) seen = v;
      }
      if (r.version !== undefined && seen !== undefined && compareVersions(r.version, seen) < 0) versionRegressions++;
    }
    let switches = 0;
    let last: string | undefined;
    for (const r of started) {
      if (!isOk(r) || r.instance === undefined) continue;
      if (last !== undefined && r.instance !== last) switches++;
      last = r.instance;
    }
    if (client >= 0 && client < switchesPerClient.length) switchesPerClient[client] = switches;
  }

  let firstNewAt: number | undefined;
  let lastOldAt: number | undefined;
  let lateOld = 0;
  if (newest !== undefined) {
    for (const r of records) {
      if (r.version === newest && (firstNewAt === undefined || r.end < firstNewAt)) firstNewAt = r.end;
    }
    for (const r of records) {
      if (r.version === undefined || compareVersions(r.version, newest) >= 0) continue;
      if (lastOldAt === undefined || r.end > lastOldAt) lastOldAt = r.end;
      if (firstNewAt !== undefined && r.start >= firstNewAt) lateOld++;
    }
  }

  const requests = records.length;
  const failed = requests - ok;
  const stats: LoadStats = {
    requests,
    ok,
    failed,
    rawFailed: failed + recovered,
    retried,
    retriedPost,
    strictFailed: records.length - ok + postRecovered,
    durationMs,
    rps: durationMs > 0 ? requests / (durationMs / 1000) : 0,
    byVersion,
    byStatus,
    versionRegressions,
    lateOld,
    errors,
    switchesPerClient,
  };
  if (firstNewAt !== undefined) stats.firstNewAt = firstNewAt;
  if (lastOldAt !== undefined) stats.lastOldAt = lastOldAt;
  return stats;
}

function formatCounts(map: Record<string, number>): string {
  const keys = Object.keys(map).sort(compareVersions);
  return keys.length === 0 ? "-" : keys.map((k) => `${k}=${map[k]}`).join(" ");
}

/** A few human-readable lines. */
export function formatStats(stats: LoadStats): string {
  const lines = [
    `requests: ${stats.requests} in ${(stats.durationMs / 1000).toFixed(1)}s (${stats.rps.toFixed(1)} rps), ok ${stats.ok}`,
    `failed: ${stats.failed} (without the resend of stale keep-alive requests: ${stats.rawFailed}; resending GETs only, like Go: ${stats.strictFailed}), resent: ${stats.retried} (POST ${stats.retriedPost})`,
  ];
  if (Object.keys(stats.errors).length > 0) lines.push(`errors: ${formatCounts(stats.errors)}`);
  let versions = `version regressions: ${stats.versionRegressions}, late old-version responses: ${stats.lateOld}`;
  if (stats.firstNewAt !== undefined && stats.lastOldAt !== undefined) {
    versions += ` (first new at ${Math.round(stats.firstNewAt)}ms, last old at ${Math.round(stats.lastOldAt)}ms)`;
  }
  lines.push(versions);
  lines.push(`by version: ${formatCounts(stats.byVersion)}`);
  return lines.join("\n");
}

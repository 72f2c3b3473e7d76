import { NodropError, type TrafficCounts, latencyBucket, shellQuote } from "@nodrop/core";

/**
 * The one log_format line a canary's analysis needs, for `http {}` (with `access_log <file>
 * nodrop;` where the app is proxied, and `proxy.accessLog: <file>`). Fields are separated by `|`,
 * which none of them contains; nginx escapes anything unusual in a variable as \xHH.
 */
export const NODROP_LOG_FORMAT = "log_format nodrop '$msec|$status|$request_time|$upstream_status|$upstream_addr';";

/**
 * What keeps a canary's gates from reading `file`, from the lines of `nginx -T` that mention
 * log_format or access_log: nodrop's format must be defined under its name exactly as given (on
 * one line), and some access_log must write `file` in it. Empty when both are there.
 */
export function accessLogSetupProblems(dump: string, file: string): string[] {
  const problems: string[] = [];
  const format = /^\s*log_format\s+nodrop(?=[\s;])\s+(.*)$/m.exec(dump);
  const wanted = NODROP_LOG_FORMAT.slice("log_format nodrop ".length);
  if (!format) problems.push(`no \`log_format nodrop\` in the nginx config: add \`${NODROP_LOG_FORMAT}\` inside http {} (proxy.accessLog)`);
  else if (format[1]!.replace(/\s*(?:#.*)?$/, "") !== wanted) problems.push(`\`log_format nodrop\` is not nodrop's format: it must read \`${NODROP_LOG_FORMAT}\` (on one line)`);
  const escaped = file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // The path may be quoted; what follows the format name are its parameters.
  const line = new RegExp(`(?:^|[{;])\\s*access_log\\s+(["']?)${escaped}\\1\\s+nodrop(?=[\\s;])([^;]*);`, "m").exec(dump);
  if (!line) problems.push(`no \`access_log ${file} nodrop;\` in the nginx config: add it where the app is proxied (proxy.accessLog)`);
  else {
    const params = line[2]!;
    // Compressed lines cannot be read; buffered ones reach the file late or at a worker's exit, after the gate.
    if (/\bgzip\b/.test(params)) problems.push(`\`access_log ${file} nodrop\` has gzip: the gates read plain lines (drop gzip)`);
    if (/\bbuffer=/.test(params) && !/\bflush=/.test(params)) problems.push(`\`access_log ${file} nodrop\` has buffer= without flush=: lines would reach the file after the gate that needs them (add flush=1s, or drop buffer)`);
  }
  return problems;
}

/** Most bytes read from the log per command: the executor keeps 1 MiB of a command's output. */
export const TRAFFIC_READ_BYTES = 900 * 1024;

const LINE = /^\d{1,12}\.\d{3}\|\d{3}\|(\d{1,7}\.\d{3})\|([^|]*)\|([^|]*)$/;
const ENDPOINT = /^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):\d{1,5}$/;
const UPSTREAM_NAME = /^[A-Za-z0-9_]{1,100}$/;
const CURSOR = /^(\d{1,20}):(\d{1,20})$/;

/** A position in the log: the file's inode (a rotated log starts again at 0) and a byte offset. */
export interface LogCursor {
  readonly inode: string;
  readonly offset: number;
}

export function formatCursor(cursor: LogCursor): string {
  return `${cursor.inode}:${cursor.offset}`;
}

/** Reads a cursor back (it may come from a journal): digits only, or an error naming it. */
export function parseCursor(text: string): LogCursor {
  const match = CURSOR.exec(text);
  const offset = Number(match?.[2]);
  if (!match || !Number.isSafeInteger(offset)) throw new NodropError("E_PROXY_SETUP", `access log cursor "${text.slice(0, 60)}" is not inode:offset`);
  return { inode: match[1]!, offset };
}

/**
 * One command: the log's inode and size (a link there is refused, exit 3), and with a cursor the
 * bytes after it, at most `max`. A cursor from another inode, or past the end (the file was
 * truncated), reads from the start.
 */
export function trafficCommand(file: string, cursor: LogCursor | undefined, max = TRAFFIC_READ_BYTES): string {
  const f = shellQuote(file);
  const lines = [
    `if [ -L ${f} ]; then echo "${file.replace(/["$`\\]/g, "")} is a symbolic link" >&2; exit 3; fi`,
    `s=$(stat -L -c '%i %s' -- ${f}) || exit 4`,
    // stat works on a file this user cannot read (nginx's logs are root:adm 0640): a read must be possible too.
    `if [ ! -r ${f} ]; then echo "${file.replace(/["$`\\]/g, "")} is not readable by $(id -un)" >&2; exit 5; fi`,
    'set -- $s; ino=$1; size=$2',
  ];
  if (!cursor) lines.push('echo "$ino $size 0"');
  else {
    lines.push(
      `from=${cursor.offset}`,
      `if [ "$ino" != ${shellQuote(cursor.inode)} ] || [ "$from" -gt "$size" ]; then from=0; fi`,
      `n=$((size - from)); if [ "$n" -gt ${max} ]; then n=${max}; fi`,
      'echo "$ino $from $n"',
      // Every byte that is not printable ASCII becomes one "?": the text keeps the file's byte
      // count, so the cursor's offset stays exact whatever another format wrote into the file.
      `tail -c +$((from + 1)) -- ${f} | head -c "$n" | LC_ALL=C tr -c '\\11\\12\\40-\\176' '?'`,
    );
  }
  return lines.join("\n");
}

/**
 * Counts what the log lines say, per upstream endpoint: each attempt nginx made (a retry lists
 * several) counts as a request of the endpoint it went to, a 5xx status (502 for a refused
 * connection included) as an error, and the request's time goes to the endpoint that answered
 * last. Only whole lines count: `consumed` is the bytes up to the last newline. Lines that do not
 * match the format (another log_format, a forged line) are skipped and counted.
 */
export function parseAccessLog(text: string): { endpoints: Record<string, TrafficCounts>; unattributed: { requests: number; errors: number }; consumed: number; skipped: number } {
  const end = text.lastIndexOf("\n");
  const whole = end < 0 ? "" : text.slice(0, end);
  const counts = new Map<string, { requests: number; errors: number; latency: number[] }>();
  const of = (where: string) => {
    let c = counts.get(where);
    if (!c) counts.set(where, (c = { requests: 0, errors: 0, latency: [] }));
    return c;
  };
  let skipped = 0;
  const unattributed = { requests: 0, errors: 0 };
  for (const line of whole.split("\n")) {
    if (line === "") continue;
    const match = LINE.exec(line);
    if (!match) {
      skipped += 1;
      continue;
    }
    const addresses = match[3]!.split(/, | : /);
    const statuses = match[2]!.split(/, | : /);
    if (addresses.length !== statuses.length) {
      skipped += 1;
      continue;
    }
    if (addresses.every((a) => a === "-" || a.startsWith("unix:"))) continue; // served by nginx itself: nothing to attribute
    let attributed = false;
    addresses.forEach((where, i) => {
      const status = Number(statuses[i]);
      const error = status >= 500;
      if (ENDPOINT.test(where)) {
        const c = of(where);
        c.requests += 1;
        if (error) c.errors += 1;
        attributed = true;
      } else if (UPSTREAM_NAME.test(where)) {
        // No live server left in a pool: nginx logs the upstream's name and a 502. Whose instances
        // failed is not in the line; a gate counts it against the deploy rather than lose it.
        unattributed.requests += 1;
        if (error) unattributed.errors += 1;
      } else skipped += 1;
    });
    if (!attributed) continue;
    const last = of(addresses.at(-1)!);
    const bucket = latencyBucket(Number(match[1]) * 1000);
    while (last.latency.length <= bucket) last.latency.push(0);
    last.latency[bucket] = last.latency[bucket]! + 1;
  }
  return { endpoints: Object.fromEntries(counts), unattributed, consumed: end < 0 ? 0 : Buffer.byteLength(text.slice(0, end + 1)), skipped };
}

import { isIP } from "node:net";
import type { SlotInspection } from "./types.js";

/** An idle port to inspect, with the live port beside it (whose processes' size the overlap counts). */
export interface SlotPair {
  readonly idlePort: number;
  readonly livePort: number;
}

/**
 * The shell command that inspects idle slots on one host, before a deploy starts processes there:
 * for each pair, who listens on the idle port (ss), the resident size of the processes holding the
 * live port's socket (a gunicorn master and its workers) and who runs each side; then the host's
 * MemAvailable. One `ss -p` (it reads every process's descriptors, the costly part) and one awk,
 * which reads each process's /proc/<pid>/status itself (no procps needed), serve every pair: a host
 * busy serving pays for each process a command forks, and a per-pair pipeline cost tenths of a
 * second there. Without ss it falls back to connecting to each idle port (bash's /dev/tcp), and
 * sizes are then unknown. Each pair's lines follow a `slot <idle port>` line. Ports are integers
 * and the address an IP literal, checked here again because this is a shell line.
 */
export function inspectSlotsCommand(pairs: readonly SlotPair[], address: string): string {
  for (const { idlePort, livePort } of pairs) {
    for (const port of [idlePort, livePort]) if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`internal: not a port: ${port}`);
  }
  if (isIP(address) === 0) throw new Error(`internal: not an IP address: ${address}`);
  const list = pairs.map((p) => `${p.idlePort} ${p.livePort}`).join(" ");
  const tcp = (port: string) => `bash -c "(exec 3<>/dev/tcp/${address}/${port}) 2>/dev/null"`;
  return [
    // ss's own exit status counts: one that fails (no -H, no permission) falls back to connecting.
    "if command -v ss >/dev/null 2>&1 && all=$(ss -Hltnp 2>/dev/null); then",
    `  printf '%s\\n' "$all" | awk -v pairs="${list}" '${PAIRS_AWK}'`,
    "else",
    "  echo noss",
    `  for pair in ${pairs.map((p) => `"${p.idlePort}"`).join(" ")}; do echo "slot $pair"; if command -v bash >/dev/null 2>&1 && ${tcp("$pair")}; then echo open; fi; done`,
    "fi",
    "awk '/^MemAvailable:/ {print \"mem\", $2}' /proc/meminfo 2>/dev/null",
    "exit 0",
  ].join("\n");
}

// Reads ss's lines and prints each pair's block: "slot", its idle port's "listen" lines, the live
// port's processes' summed "rss" (KiB), and each side's first process's "owner" (effective uid and
// name), all from /proc/<pid>/status. A listener's local port is the last ":" field of ss's fourth
// column. POSIX awk (mawk, busybox): no single quote, since it is inside one.
const PAIRS_AWK = [
  `function firstpid(text) { return match(text, /pid=[0-9]+/) ? substr(text, RSTART + 4, RLENGTH - 4) : "" }`,
  // uid[p], name[p] and rss[p] from the process's status file, read once; nothing when it is gone.
  `function status(p,  file, line, f) { if (p in read) return; read[p] = 1; file = "/proc/" p "/status";`,
  `  while ((getline line < file) > 0) {`,
  `    if (line ~ /^Name:/) name[p] = substr(line, index(line, "\\t") + 1);`,
  `    else if (line ~ /^Uid:/) { split(line, f, /[ \\t]+/); uid[p] = f[3] }`,
  `    else if (line ~ /^VmRSS:/) { split(line, f, /[ \\t]+/); rss[p] = f[2] }`,
  `  }`,
  `  close(file) }`,
  `function owner(side, text,  p) { p = firstpid(text); if (p == "") return; status(p); if (p in uid) print "owner", side, uid[p], name[p] }`,
  `NF { n = split($4, a, ":"); port = a[n]; at[port] = at[port] $0 "\\n"; if (!(port in first)) first[port] = $0 }`,
  `END {`,
  `  n = split(pairs, p, " ");`,
  `  for (k = 1; k < n; k += 2) {`,
  `    idle = p[k]; live = p[k + 1]; print "slot", idle;`,
  `    m = split(at[idle], lines, "\\n"); for (j = 1; j <= m; j++) if (lines[j] != "") { split(lines[j], f, " "); print "listen", f[4], lines[j] }`,
  `    split("", counted); sum = 0; sized = 0; s = at[live];`,
  `    while (match(s, /pid=[0-9]+/)) { q = substr(s, RSTART + 4, RLENGTH - 4); s = substr(s, RSTART + RLENGTH); if (q in counted) continue; counted[q] = 1; status(q); if (q in rss) { sum += rss[q]; sized = 1 } }`,
  `    if (sized) print "rss", sum;`,
  `    owner("idle", first[idle]); owner("live", first[live])`,
  `  }`,
  `}`,
].join("\n");

/** The command for one pair (inspectSlotsCommand's output, read with parseSlotInspection). */
export function inspectSlotCommand(idlePort: number, livePort: number, address: string): string {
  return inspectSlotsCommand([{ idlePort, livePort }], address);
}

/** Whether a listening socket's local address (as ss prints it) takes `address`'s port: that address, or a wildcard. */
export function listenerTakes(local: string, address: string): boolean {
  let host = local.replace(/:\d+$/, "");
  host = host.replace(/^\[(.*)\]$/, "$1").replace(/%[^%]*$/, "").replace(/^::ffff:/i, "");
  const wanted = canonical(address.replace(/^::ffff:/i, ""));
  return host === "*" || host === "0.0.0.0" || host === "::" || canonical(host) === wanted;
}

/** One spelling per address: IPv6 compressed and lower case, as ss prints it ("0:0:0:0:0:0:0:1" is "::1"). */
function canonical(host: string): string {
  return isIP(host) === 6 ? new URL(`http://[${host}]/`).hostname.slice(1, -1) : host.toLowerCase();
}

/**
 * Reads what inspectSlotsCommand printed: each idle port's inspection (the host's MemAvailable
 * goes with every one). The host's text is not trusted: only numbers and the listener's address are kept.
 */
export function parseSlotInspections(stdout: string, address: string): Map<number, SlotInspection> {
  const blocks = new Map<number, string[]>();
  const shared: string[] = [];
  let current: string[] = shared;
  for (const line of stdout.split("\n")) {
    const slot = /^slot (\d{1,5})$/.exec(line.trim());
    if (slot) blocks.set(Number(slot[1]), (current = []));
    else if (/^(mem|noss)\b/.test(line.trim())) shared.push(line);
    else current.push(line);
  }
  return new Map([...blocks].map(([port, lines]) => [port, parseSlotInspection([...lines, ...shared].join("\n"), address)]));
}

/** Reads one pair's lines of inspectSlotsCommand's output (with the host's MemAvailable line). */
export function parseSlotInspection(stdout: string, address: string): SlotInspection {
  const listeners: string[] = [];
  let open = false;
  let rssKiB: number | undefined;
  let memKiB: number | undefined;
  const owners: { idle?: string; live?: string } = {};
  for (const line of stdout.split("\n")) {
    const [word, first] = line.trim().split(/\s+/);
    if (word === "listen" && first && listenerTakes(first, address)) {
      const pid = /pid=(\d+)/.exec(line)?.[1];
      const name = /\(\("([A-Za-z0-9._-]{1,32})"/.exec(line)?.[1];
      listeners.push(`${first.replace(/[^A-Za-z0-9.:[\]*%_-]/g, "?")}${pid ? ` (${name ?? "pid"} ${pid})` : ""}`);
    } else if (word === "open") open = true;
    else if (word === "rss" && /^\d+$/.test(first ?? "")) rssKiB = Number(first);
    else if (word === "mem" && /^\d+$/.test(first ?? "")) memKiB = Number(first);
    else if (word === "owner" && (first === "idle" || first === "live")) {
      const [, , uid, ...name] = line.trim().split(/\s+/);
      if (/^\d+$/.test(uid ?? "")) owners[first] = `${uid}:${name.join(" ").replace(/[^A-Za-z0-9._-]/g, "?").slice(0, 32)}`;
    }
  }
  if (open) listeners.push(`${address} (answers a connection)`);
  return {
    free: listeners.length === 0,
    ...(listeners.length > 0 ? { listener: listeners.join(", ") } : {}),
    ...(rssKiB !== undefined && rssKiB > 0 ? { liveRssBytes: rssKiB * 1024 } : {}),
    ...(memKiB !== undefined ? { availableBytes: memKiB * 1024 } : {}),
    ...(owners.idle ? { listenerOwner: owners.idle } : {}),
    ...(owners.live ? { liveOwner: owners.live } : {}),
  };
}

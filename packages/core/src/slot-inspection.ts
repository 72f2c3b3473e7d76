import { isIP } from "node:net";
import { shellQuote } from "./template.js";
import type { SlotInspection } from "./types.js";

/**
 * The shell command that inspects an idle slot on the instance's host, before a deploy starts a
 * process there: who listens on the idle port (ss), the resident size of the processes holding the
 * live port's socket (a gunicorn master and its workers), and the host's MemAvailable. Without ss it
 * falls back to connecting to the port (bash's /dev/tcp), and the size is then unknown.
 * Ports are integers and the address an IP literal, checked here again because this is a shell line.
 */
export function inspectSlotCommand(idlePort: number, livePort: number, address: string): string {
  for (const port of [idlePort, livePort]) if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`internal: not a port: ${port}`);
  const tcp = shellQuote(`(exec 3<>/dev/tcp/${address}/${idlePort}) 2>/dev/null`);
  return [
    // ss's own exit status counts: one that fails (no -H, no permission) falls back to connecting.
    `if command -v ss >/dev/null 2>&1 && idle=$(ss -Hltnp '( sport = :${idlePort} )' 2>/dev/null) && live=$(ss -Hltnp '( sport = :${livePort} )' 2>/dev/null); then`,
    `  printf '%s\\n' "$idle" | awk 'NF {print "listen", $4, $0}'`,
    `  pids=$(printf '%s\\n' "$live" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | paste -sd, -)`,
    `  if [ -n "$pids" ]; then ps -o rss= -p "$pids" 2>/dev/null | awk '{s+=$1} END {print "rss", s}'; fi`,
    // Who runs each side (uid and process name): a process on the idle port is taken for the app's only when it matches.
    `  for side in idle live; do eval "lines=\\$$side"; pid=$(printf '%s\\n' "$lines" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2); if [ -n "$pid" ]; then echo "owner $side $(stat -c %u /proc/$pid 2>/dev/null) $(cat /proc/$pid/comm 2>/dev/null)"; fi; done`,
    "else",
    "  echo noss",
    `  if command -v bash >/dev/null 2>&1 && bash -c ${tcp}; then echo open; fi`,
    "fi",
    "awk '/^MemAvailable:/ {print \"mem\", $2}' /proc/meminfo 2>/dev/null",
    "exit 0",
  ].join("\n");
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

/** Reads what inspectSlotCommand printed. The host's text is not trusted: only numbers and the listener's address are kept. */
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

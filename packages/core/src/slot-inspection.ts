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
    "if command -v ss >/dev/null 2>&1; then",
    `  ss -Hltnp '( sport = :${idlePort} )' 2>/dev/null | awk '{print "listen", $4, $0}'`,
    `  pids=$(ss -Hltnp '( sport = :${livePort} )' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u | paste -sd, -)`,
    `  if [ -n "$pids" ]; then ps -o rss= -p "$pids" 2>/dev/null | awk '{s+=$1} END {print "rss", s}'; fi`,
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
  const wanted = address.replace(/^::ffff:/i, "").toLowerCase();
  return host === "*" || host === "0.0.0.0" || host === "::" || host.toLowerCase() === wanted;
}

/** Reads what inspectSlotCommand printed. The host's text is not trusted: only numbers and the listener's address are kept. */
export function parseSlotInspection(stdout: string, address: string): SlotInspection {
  const listeners: string[] = [];
  let open = false;
  let rssKiB: number | undefined;
  let memKiB: number | undefined;
  for (const line of stdout.split("\n")) {
    const [word, first] = line.trim().split(/\s+/);
    if (word === "listen" && first && listenerTakes(first, address)) {
      const pid = /pid=(\d+)/.exec(line)?.[1];
      const name = /\(\("([A-Za-z0-9._-]{1,32})"/.exec(line)?.[1];
      listeners.push(`${first.replace(/[^A-Za-z0-9.:[\]*%_-]/g, "?")}${pid ? ` (${name ?? "pid"} ${pid})` : ""}`);
    } else if (word === "open") open = true;
    else if (word === "rss" && /^\d+$/.test(first ?? "")) rssKiB = Number(first);
    else if (word === "mem" && /^\d+$/.test(first ?? "")) memKiB = Number(first);
  }
  if (open) listeners.push(`${address} (answers a connection)`);
  return {
    free: listeners.length === 0,
    ...(listeners.length > 0 ? { listener: listeners.join(", ") } : {}),
    ...(rssKiB !== undefined && rssKiB > 0 ? { liveRssBytes: rssKiB * 1024 } : {}),
    ...(memKiB !== undefined ? { availableBytes: memKiB * 1024 } : {}),
  };
}

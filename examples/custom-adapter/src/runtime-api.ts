import net from "node:net";
import { NodropError, abortError } from "@nodrop/core";

/**
 * A tiny client for HAProxy's runtime API (the `stats socket`): one command per connection, in
 * HAProxy's non-interactive mode, where it answers and closes the connection.
 */

/** How HAProxy's admin flags combine (src/include/haproxy/server-t.h, `enum srv_admin`). */
const ADMF_FMAINT = 0x01;
const ADMF_IMAINT = 0x02;
const ADMF_FDRAIN = 0x08;
const ADMF_IDRAIN = 0x10;
const ADMF_RMAINT = 0x20;
/** Any maintenance flag but CMAINT, which only records that the config said `disabled`. */
const ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT;
const ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN;

/** The states `set server <backend>/<server> state` sets. */
export type AdminState = "ready" | "drain" | "maint";

/** A server's operational state (`srv_op_state`): whether HAProxy itself considers it up. */
export type OperationalState = "stopped" | "starting" | "running" | "stopping";
const OP_STATES: readonly OperationalState[] = ["stopped", "starting", "running", "stopping"];

/** One row of `show servers state <backend>`. */
export interface ServerState {
  readonly backend: string;
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly admin: AdminState;
  /** The raw `srv_admin_state` flags. */
  readonly adminFlags: number;
  readonly operational: OperationalState;
  readonly weight: number;
}

/** One server row of `show stat`. */
export interface ServerStat {
  readonly backend: string;
  readonly name: string;
  /** Sessions (streams) currently on the server: requests in flight. */
  readonly sessions: number;
  /** Requests queued for the server (only with `maxconn` on the server). */
  readonly queued: number;
  /** HAProxy's status column: UP, DOWN, DRAIN, MAINT, "no check", ... */
  readonly status: string;
}

/** Names HAProxy can take in a command without quoting, and that cannot smuggle a second command in. */
const PLAIN_WORD = /^[A-Za-z0-9._-]+$/;

export function adminStateOf(flags: number): AdminState {
  if (flags & ADMF_MAINT) return "maint";
  if (flags & ADMF_DRAIN) return "drain";
  return "ready";
}

/** Parses `show servers state` (format version 1: a version line, a `# ` header, space-separated rows). */
export function parseServersState(text: string): ServerState[] {
  const lines = text.split("\n").map((line) => line.trim()).filter((line) => line !== "");
  const header = lines.find((line) => line.startsWith("# "));
  if (lines[0] !== "1" || !header) throw new Error(`unexpected \`show servers state\` output (format version 1 expected): ${firstLine(text)}`);
  const columns = header.slice(2).trim().split(/\s+/);
  const at = (name: string) => {
    const index = columns.indexOf(name);
    if (index < 0) throw new Error(`\`show servers state\` has no ${name} column`);
    return index;
  };
  const backend = at("be_name");
  const name = at("srv_name");
  const address = at("srv_addr");
  const port = at("srv_port");
  const op = at("srv_op_state");
  const admin = at("srv_admin_state");
  const weight = at("srv_uweight");
  return lines
    .filter((line) => !line.startsWith("#") && line !== "1")
    .map((line) => {
      const fields = line.split(/\s+/);
      const flags = Number(fields[admin]);
      return {
        backend: fields[backend]!,
        name: fields[name]!,
        address: fields[address]!,
        port: Number(fields[port]),
        admin: adminStateOf(flags),
        adminFlags: flags,
        operational: OP_STATES[Number(fields[op])] ?? "stopped",
        weight: Number(fields[weight]),
      };
    });
}

/** Parses the CSV of `show stat` and keeps the server rows. */
export function parseStatCsv(text: string): ServerStat[] {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  const header = lines[0];
  if (!header?.startsWith("# ")) throw new Error(`unexpected \`show stat\` output (a CSV header expected): ${firstLine(text)}`);
  const columns = splitCsvLine(header.slice(2));
  const at = (name: string) => {
    const index = columns.indexOf(name);
    if (index < 0) throw new Error(`\`show stat\` has no ${name} column`);
    return index;
  };
  const [pxname, svname, scur, qcur, status, type] = ["pxname", "svname", "scur", "qcur", "status", "type"].map(at) as [number, number, number, number, number, number];
  return lines
    .slice(1)
    .map(splitCsvLine)
    // type 2 is a server row (0 frontend, 1 backend, 3 listener).
    .filter((fields) => fields[type] === "2")
    .map((fields) => ({
      backend: fields[pxname]!,
      name: fields[svname]!,
      sessions: Number(fields[scur] || 0),
      queued: Number(fields[qcur] || 0),
      status: fields[status] ?? "",
    }));
}

/** HAProxy quotes a field that holds a comma or a quote, and doubles quotes inside it. */
function splitCsvLine(line: string): string[] {
  const fields: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      fields.push(field);
      field = "";
    } else field += c;
  }
  fields.push(field);
  return fields;
}

function firstLine(text: string): string {
  return JSON.stringify(text.trim().split("\n")[0] ?? "");
}

export interface RuntimeApiOptions {
  /** The stats socket: a Unix socket path, or `tcp://host:port` for `stats socket ipv4@host:port`. */
  socket: string;
  /** Bounds each command, from connecting to the end of the answer. @default 5000 */
  timeoutMs?: number;
}

export interface RuntimeApi {
  /** Sends one command on a fresh connection and resolves with HAProxy's answer, trimmed. */
  command(command: string, signal?: AbortSignal): Promise<string>;
  serversState(backend: string, signal?: AbortSignal): Promise<ServerState[]>;
  stat(backend: string, signal?: AbortSignal): Promise<ServerStat[]>;
  setState(backend: string, server: string, state: AdminState, signal?: AbortSignal): Promise<void>;
  /** The session's level: admin, operator or user (`show cli level`). */
  level(signal?: AbortSignal): Promise<string>;
  /** HAProxy's version (`show info`). */
  version(signal?: AbortSignal): Promise<string | undefined>;
}

/** The answer of a command that HAProxy refused ("No such server.", "Permission denied"). */
export class RuntimeApiRefusal extends Error {
  readonly command: string;
  readonly answer: string;
  constructor(command: string, answer: string) {
    super(`HAProxy refused \`${command}\`: ${answer}`);
    this.name = "RuntimeApiRefusal";
    this.command = command;
    this.answer = answer;
  }
}

export function runtimeApi(options: RuntimeApiOptions): RuntimeApi {
  const timeoutMs = options.timeoutMs ?? 5000;
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(options.socket);
  const target = tcp ? { host: tcp[1]!.replace(/^\[|\]$/g, ""), port: Number(tcp[2]) } : { path: options.socket };

  const command = (line: string, signal?: AbortSignal): Promise<string> => {
    // One line, no `;` (HAProxy's command separator): each call is exactly one command.
    if (/[\n\r;]/.test(line)) return Promise.reject(new NodropError("E_PROXY_SETUP", `refusing to send ${JSON.stringify(line)} to HAProxy: one command per call`));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<string>((resolve, reject) => {
      const socket = net.createConnection(target);
      let answer = "";
      let settled = false;
      const finish = (error?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        socket.destroy();
        if (error) reject(error);
        else resolve(answer.trim());
      };
      const onAbort = () => finish(abortError(signal));
      const timer = setTimeout(() => finish(new NodropError("E_PROXY_RELOAD", `HAProxy's runtime API at ${options.socket} did not answer \`${line}\` within ${timeoutMs}ms`)), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      socket.setEncoding("utf8");
      // No half-close after the command: HAProxy answers, then closes the connection itself.
      socket.on("connect", () => socket.write(`${line}\n`));
      socket.on("data", (chunk: string) => (answer += chunk));
      socket.on("end", () => finish());
      socket.on("error", (error: NodeJS.ErrnoException) => {
        const why = error.code === "ENOENT" ? "no such socket" : error.code === "ECONNREFUSED" ? "connection refused (is HAProxy running?)" : error.code === "EACCES" ? "permission denied" : error.message;
        finish(new NodropError("E_PROXY_RELOAD", `cannot reach HAProxy's runtime API at ${options.socket}: ${why}`, { cause: error }));
      });
    });
  };

  const word = (kind: string, value: string) => {
    if (!PLAIN_WORD.test(value)) throw new NodropError("E_PROXY_SETUP", `${kind} ${JSON.stringify(value)} cannot go into a HAProxy command: only letters, digits, '.', '_' and '-'`);
    return value;
  };

  return {
    command,
    async serversState(backend, signal) {
      const line = `show servers state ${word("backend", backend)}`;
      const answer = await command(line, signal);
      if (!answer.startsWith("1\n") && answer !== "1") throw new RuntimeApiRefusal(line, answer);
      return parseServersState(answer);
    },
    async stat(backend, signal) {
      // 4: servers only; -1: all of them.
      const line = `show stat ${word("backend", backend)} 4 -1`;
      const answer = await command(line, signal);
      if (!answer.startsWith("# ")) throw new RuntimeApiRefusal(line, answer);
      return parseStatCsv(answer).filter((s) => s.backend === backend);
    },
    async setState(backend, server, state, signal) {
      const line = `set server ${word("backend", backend)}/${word("server", server)} state ${state}`;
      const answer = await command(line, signal);
      // Success is silent; anything said is a refusal.
      if (answer !== "") throw new RuntimeApiRefusal(line, answer);
    },
    async level(signal) {
      return command("show cli level", signal);
    },
    async version(signal) {
      const answer = await command("show info", signal);
      return /^Version:\s*(\S+)/m.exec(answer)?.[1];
    },
  };
}

import { appendFile } from "node:fs/promises";
import { type ExecOptions, type ExecResult, type Executor, NodropError, abortError, shellQuote, sleep } from "@nodrop/core";
import ssh2 from "ssh2";
import { fingerprint, type KnownHostEntry, keyType, knownHostsLine, knownHostsName, parseKnownHosts, verifyKnownHost } from "./known-hosts.js";
import { semaphore } from "./semaphore.js";

// ssh2 is CommonJS: under native ESM only its default export exists (named imports throw).
const { Client, utils } = ssh2;
type SshClient = InstanceType<typeof Client>;

export interface HostKeyOptions {
  /** known_hosts text; entries for other hosts are ignored. */
  readonly knownHosts?: string | undefined;
  /** Pinned fingerprints in OpenSSH's form, "SHA256:...". */
  readonly fingerprints?: readonly string[] | undefined;
  /**
   * "strict" (default): an unknown or changed key is refused. "accept-new": an unknown key is
   * accepted and appended to `recordTo`; a changed key is still refused.
   */
  readonly policy?: "strict" | "accept-new" | undefined;
  /** known_hosts file where "accept-new" records keys. */
  readonly recordTo?: string | undefined;
}

export interface SshTarget {
  /** The host's name in the config, used in every message. */
  readonly name: string;
  readonly address: string;
  readonly port?: number | undefined;
  readonly user: string;
  /** Private key text (OpenSSH or PEM). Never logged or put in an error. */
  readonly privateKey?: string | Buffer | undefined;
  readonly passphrase?: string | undefined;
  /** ssh-agent socket path. */
  readonly agent?: string | undefined;
  readonly hostKeys: HostKeyOptions;
  /** Reach this host through another one, like ProxyJump. */
  readonly jump?: SshTarget | undefined;
  readonly connectTimeoutMs?: number | undefined;
  readonly keepaliveIntervalMs?: number | undefined;
}

export interface SshExecutorOptions extends SshTarget {
  /** Concurrent commands on the connection; OpenSSH allows 10 sessions by default. */
  readonly maxSessions?: number | undefined;
  /** Connection attempts after a network failure (not after a host key or auth failure). */
  readonly connectAttempts?: number | undefined;
  readonly log?: ((message: string) => void) | undefined;
}

export interface SshExecutor extends Executor {
  /** Connections opened so far (a deploy should open one per host). */
  readonly connectionsOpened: () => number;
  /** Closes the connection; the next command opens a new one. */
  dispose(): Promise<void>;
}

const PGID_MARK = "@nodrop-pgid=";
const RETRYABLE = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|Timed out while waiting for handshake/;

/**
 * Runs commands on one host over SSH: one connection, opened on first use and shared by every
 * command; at most `maxSessions` commands at once; host key verified before any command; a
 * timeout that ends the remote command too (`timeout` on the host kills its process group).
 */
export function sshExecutor(options: SshExecutorOptions): SshExecutor {
  const maxSessions = Math.min(Math.max(options.maxSessions ?? 8, 1), 9);
  const sessions = semaphore(maxSessions);
  const log = options.log ?? (() => {});
  let client: Promise<SshClient> | undefined;
  let opened = 0;
  const dropListeners = new Set<(error: NodropError) => void>();

  const open = async (): Promise<SshClient> => {
    const attempts = options.connectAttempts ?? 3;
    for (let attempt = 1; ; attempt++) {
      try {
        const conn = await connect(options, log);
        opened += 1;
        conn.on("close", () => {
          client = undefined;
          const error = new NodropError("E_SSH_DROPPED", `connection to ${options.name} (${options.address}) closed`);
          for (const listener of dropListeners) listener(error);
        });
        return conn;
      } catch (error) {
        const retry = NodropError.is(error) && error.code === "E_SSH_CONNECT" && RETRYABLE.test(error.message) && attempt < attempts;
        if (!retry) throw error;
        // Bounded backoff: 250 ms, 500 ms, 1 s ...
        await sleep(250 * 2 ** (attempt - 1));
      }
    }
  };

  const connection = () => {
    client ??= open().catch((error: unknown) => {
      client = undefined;
      throw error;
    });
    return client;
  };

  const exec = async (command: string, execOptions: ExecOptions = {}): Promise<ExecResult> => {
    const { signal, timeoutMs, input } = execOptions;
    if (signal?.aborted) throw abortError(signal);
    const release = await sessions.acquire(signal);
    try {
      const conn = await connection();
      // Connecting can take a while (a passphrase-protected key is slow to decrypt); an abort meanwhile still counts.
      if (signal?.aborted) throw abortError(signal);
      // The host ends the command itself at the deadline, even if this connection is gone by then:
      // `timeout` runs it in a process group of its own and kills the whole group. The wrapper first
      // reports that group's id, so an abort can end it too (an SSH signal request cannot reach a
      // channel whose input is already closed).
      const limit = timeoutMs === undefined ? "24h" : `${(timeoutMs / 1000).toFixed(3)}s`;
      const wrapped = `echo "${PGID_MARK}$$" >&2; exec timeout --kill-after=5 ${limit} bash -c ${shellQuote(command)}`;
      return await runChannel(conn, `bash -c ${shellQuote(wrapped)}`, { command, signal, timeoutMs, input });
    } finally {
      release();
    }
  };

  const runChannel = (conn: SshClient, remote: string, o: { command: string; signal?: AbortSignal | undefined; timeoutMs?: number | undefined; input?: string | undefined }) =>
    new Promise<ExecResult>((resolve, reject) => {
      const started = performance.now();
      let settled = false;
      let code: number | null = null;
      let stdout = "";
      let stderr = "";
      let timer: NodeJS.Timeout | undefined;
      const finish = (error: NodropError | undefined) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        o.signal?.removeEventListener("abort", onAbort);
        dropListeners.delete(onDrop);
        if (error) reject(error);
        else if (o.timeoutMs !== undefined && (code === 124 || code === 137) && performance.now() - started >= o.timeoutMs * 0.9) {
          reject(new NodropError("E_TIMEOUT", `command timed out after ${o.timeoutMs}ms on ${options.name} and was ended there: ${o.command}`));
        } else resolve({ code, stdout, stderr, durationMs: performance.now() - started });
      };
      const onDrop = (error: NodropError) =>
        finish(new NodropError("E_SSH_DROPPED", `${error.message} while running \`${o.command}\`: whether it took effect is unknown`));
      dropListeners.add(onDrop);
      let channel: ssh2.ClientChannel | undefined;
      let pgid: number | undefined;
      const killRemote = () => {
        if (pgid === undefined) return;
        // A separate session on the same connection ends the command's process group.
        conn.exec(`kill -TERM -- -${pgid} 2>/dev/null; sleep 2; kill -KILL -- -${pgid} 2>/dev/null; true`, (error, stream) => {
          if (!error) stream.resume().on("close", () => undefined).end();
        });
      };
      const onAbort = () => {
        killRemote();
        channel?.close();
        finish(abortError(o.signal));
      };
      o.signal?.addEventListener("abort", onAbort, { once: true });
      conn.exec(remote, (error, stream) => {
        if (error) return finish(new NodropError("E_EXEC", `cannot open a session on ${options.name}: ${error.message}`));
        channel = stream;
        if (settled) {
          stream.close();
          return;
        }
        if (o.timeoutMs !== undefined) {
          // Backstop if the host's own `timeout` cannot act (a wedged host): stop waiting.
          timer = setTimeout(() => {
            killRemote();
            stream.close();
            finish(new NodropError("E_TIMEOUT", `command timed out after ${o.timeoutMs}ms on ${options.name} (no answer from the host): ${o.command}`));
          }, o.timeoutMs + 10_000);
        }
        stream.on("exit", (exitCode: number | null) => {
          code = exitCode;
        });
        // Decoded by the stream, so a character split across two packets stays whole.
        stream.setEncoding("utf8");
        stream.stderr.setEncoding("utf8");
        stream.on("data", (chunk: string) => {
          if (stdout.length < 1 << 20) stdout += chunk;
        });
        stream.stderr.on("data", (chunk: string) => {
          if (stderr.length < 1 << 20) stderr += chunk;
          if (pgid === undefined) {
            const match = new RegExp(`^${PGID_MARK}(\\d+)\\n`).exec(stderr);
            if (match) {
              pgid = Number(match[1]);
              stderr = stderr.slice(match[0].length);
              if (settled) killRemote();
            }
          }
        });
        stream.on("close", () => finish(undefined));
        stream.end(o.input ?? "");
      });
    });

  return {
    name: "ssh",
    host: options.name,
    exec,
    connectionsOpened: () => opened,
    async dispose() {
      const current = client;
      client = undefined;
      if (current) (await current.catch(() => undefined))?.end();
    },
  };
}

/** Opens a verified, authenticated connection (through the jump host when there is one). */
async function connect(target: SshTarget, log: (message: string) => void): Promise<SshClient> {
  const port = target.port ?? 22;
  const where = `${target.name} (${target.user}@${target.address}:${port})`;
  if (target.privateKey !== undefined) {
    const parsed = utils.parseKey(target.privateKey, target.passphrase);
    if (parsed instanceof Error) {
      throw new NodropError("E_SSH_AUTH", `private key for ${target.name} cannot be used: ${parsed.message.replace(/[\r\n]+/g, " ")}`);
    }
  }
  let sock: NodeJS.ReadableStream | undefined;
  let jumpClient: SshClient | undefined;
  if (target.jump) {
    jumpClient = await connect(target.jump, log);
    const jc = jumpClient;
    sock = await new Promise((resolve, reject) =>
      jc.forwardOut("127.0.0.1", 0, target.address, port, (error, stream) =>
        error ? reject(new NodropError("E_SSH_CONNECT", `jump host ${target.jump!.name} cannot reach ${where}: ${error.message}`)) : resolve(stream),
      ),
    );
  }
  const entries = parseKnownHosts(target.hostKeys.knownHosts ?? "");
  let refusal: NodropError | undefined;
  let toRecord: { line: string; seen: string } | undefined;
  const hostVerifier = (key: Buffer): boolean => {
    const seen = `${keyType(key)} ${fingerprint(key)}`;
    const names = [knownHostsName(target.address, port), ...(target.name !== target.address ? [knownHostsName(target.name, port)] : [])];
    const pins = target.hostKeys.fingerprints ?? [];
    if (pins.includes(fingerprint(key))) return true;
    const verdict = verifyKnownHost(entries, names, key);
    if (verdict.status === "match") return true;
    if (verdict.status === "revoked") {
      refusal = new NodropError("E_SSH_HOSTKEY", `host key of ${where} is revoked in known_hosts (line ${verdict.line}); seen ${seen}`);
      return false;
    }
    if (verdict.status === "mismatch" || pins.length > 0) {
      const expected = verdict.status === "mismatch" ? verdict.expected : pins;
      refusal = new NodropError(
        "E_SSH_HOSTKEY",
        `host key of ${where} has CHANGED: seen ${seen}, expected ${expected.join(" or ")}. Someone may be intercepting the connection; if the host was rebuilt, update known hosts.`,
      );
      return false;
    }
    if (target.hostKeys.policy === "accept-new") {
      toRecord = { line: knownHostsLine(names[0]!, key), seen };
      return true;
    }
    refusal = new NodropError(
      "E_SSH_HOSTKEY",
      `host key of ${where} is unknown: seen ${seen}. Add it to known hosts (ssh-keyscan -p ${port} ${target.address}, then check the fingerprint) or pin it (hostKey fingerprint), or choose hostKeyPolicy: accept-new.`,
    );
    return false;
  };

  const conn = new Client();
  await new Promise<void>((resolve, reject) => {
    conn.once("ready", () => resolve());
    conn.once("error", (error: Error & { level?: string }) => {
      jumpClient?.end();
      if (refusal) return reject(refusal);
      if (error.level === "client-authentication") {
        return reject(new NodropError("E_SSH_AUTH", `authentication failed for ${where} (methods tried: ${target.privateKey !== undefined ? "publickey " : ""}${target.agent ? "agent" : ""}); check the key and the user`));
      }
      reject(new NodropError("E_SSH_CONNECT", `cannot connect to ${where}: ${error.message}`));
    });
    conn.connect({
      host: target.address,
      port,
      username: target.user,
      ...(target.privateKey !== undefined ? { privateKey: target.privateKey } : {}),
      ...(target.passphrase !== undefined ? { passphrase: target.passphrase } : {}),
      ...(target.agent !== undefined ? { agent: target.agent } : {}),
      ...(sock !== undefined ? { sock: sock as never } : {}),
      readyTimeout: target.connectTimeoutMs ?? 10_000,
      keepaliveInterval: target.keepaliveIntervalMs ?? 5_000,
      keepaliveCountMax: 3,
      hostVerifier,
    });
  });
  if (jumpClient) conn.on("close", () => jumpClient?.end());
  if (toRecord) {
    // accept-new is an explicit choice; say exactly what it trusted.
    if (target.hostKeys.recordTo) {
      await appendFile(target.hostKeys.recordTo, `${toRecord.line}\n`, { mode: 0o600 });
      log(`recorded the new host key of ${where}: ${toRecord.seen}, in ${target.hostKeys.recordTo}`);
    } else log(`accepted the new host key of ${where}: ${toRecord.seen} (not recorded: no known hosts file)`);
  }
  return conn;
}

export type { KnownHostEntry };

import { mkdir, open } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type ExecOptions, type ExecResult, type Executor, NodropError, type UploadOptions, abortError, shellQuote, sleep } from "@nodrop/core";
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
// "Connection lost before handshake": something in between (a proxy, a jump) accepted, but no sshd answered yet.
const RETRYABLE = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|Timed out while waiting for handshake|Connection lost before handshake/;

/**
 * One SSH connection's life, its state in one place: the client, the commands running on it and,
 * once it has dropped (an error, a close, its jump host gone, or ended by nodrop), why. A dropped
 * link is never used again: the executor opens a new one. Whatever happens to an old link later
 * (a late close, another error) touches that link only.
 */
class Link {
  readonly client: SshClient = new Client();
  dropped: NodropError | undefined;
  private readonly running = new Set<(error: NodropError) => void>();

  /** `listener` hears of the drop, once; the function returned stops that. */
  watch(listener: (error: NodropError) => void): () => void {
    this.running.add(listener);
    return () => this.running.delete(listener);
  }

  /** The first reason wins. Fails what runs on the connection, then ends it (at once when `broken`). */
  drop(error: NodropError, broken: boolean): void {
    if (this.dropped) return;
    this.dropped = error;
    const listeners = [...this.running];
    this.running.clear();
    for (const listener of listeners) listener(error);
    if (broken) this.client.destroy();
    else this.client.end();
  }
}

/**
 * Runs commands on one host over SSH: one connection, opened on first use and shared by every
 * command; at most `maxSessions` commands at once; host key verified before any command; a
 * timeout that ends the remote command too (`timeout` on the host kills its process group).
 */
export function sshExecutor(options: SshExecutorOptions): SshExecutor {
  const maxSessions = Math.min(Math.max(options.maxSessions ?? 8, 1), 9);
  const sessions = semaphore(maxSessions);
  const log = options.log ?? (() => {});
  // The connection in use, and the one being opened; a dropped `live` link is replaced on next use.
  let live: Link | undefined;
  let opening: Promise<Link> | undefined;
  let opened = 0;

  const open = async (): Promise<Link> => {
    const attempts = options.connectAttempts ?? 3;
    for (let attempt = 1; ; attempt++) {
      try {
        const link = new Link();
        await connect(options, log, link);
        opened += 1;
        return link;
      } catch (error) {
        const retry = NodropError.is(error) && error.code === "E_SSH_CONNECT" && RETRYABLE.test(error.message) && attempt < attempts;
        if (!retry) throw error;
        // Bounded backoff: 250 ms, 500 ms, 1 s ...
        await sleep(250 * 2 ** (attempt - 1));
      }
    }
  };

  const connection = (): Promise<Link> => {
    if (live && !live.dropped) return Promise.resolve(live);
    opening ??= open().then(
      (link) => {
        opening = undefined;
        live = link;
        return link;
      },
      (error: unknown) => {
        opening = undefined;
        throw error;
      },
    );
    return opening;
  };

  const exec = async (command: string, execOptions: ExecOptions = {}): Promise<ExecResult> => {
    const { signal, timeoutMs, input } = execOptions;
    if (signal?.aborted) throw abortError(signal);
    const release = await sessions.acquire(signal);
    try {
      const link = await connection();
      // Connecting can take a while (a passphrase-protected key is slow to decrypt); an abort meanwhile still counts.
      if (signal?.aborted) throw abortError(signal);
      // The host ends the command itself at the deadline, even if this connection is gone by then:
      // `timeout` runs it in a process group of its own and kills the whole group. The wrapper first
      // reports that group's id, so an abort can end it too (an SSH signal request cannot reach a
      // channel whose input is already closed).
      const limit = timeoutMs === undefined ? "24h" : `${(timeoutMs / 1000).toFixed(3)}s`;
      const wrapped = `echo "${PGID_MARK}$$" >&2; exec timeout --kill-after=5 ${limit} bash -c ${shellQuote(command)}`;
      return await runChannel(link, `bash -c ${shellQuote(wrapped)}`, { command, signal, timeoutMs, input });
    } finally {
      release();
    }
  };

  const runChannel = (link: Link, remote: string, o: { command: string; signal?: AbortSignal | undefined; timeoutMs?: number | undefined; input?: string | undefined }) =>
    new Promise<ExecResult>((resolve, reject) => {
      const conn = link.client;
      // Gone before the command started (it dropped while it was being opened): the command did not run.
      if (link.dropped) return reject(new NodropError("E_SSH_DROPPED", `${link.dropped.message} before \`${o.command}\` started`));
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
        unwatch();
        if (error) reject(error);
        else if (o.timeoutMs !== undefined && (code === 124 || code === 137) && performance.now() - started >= o.timeoutMs * 0.9) {
          reject(new NodropError("E_TIMEOUT", `command timed out after ${o.timeoutMs}ms on ${options.name} and was ended there: ${o.command}`));
        } else resolve({ code, stdout, stderr, durationMs: performance.now() - started });
      };
      const onDrop = (error: NodropError) =>
        finish(new NodropError("E_SSH_DROPPED", `${error.message} while running \`${o.command}\`: whether it took effect is unknown`));
      // Tied to the connection this command runs on: another connection's close is not its business.
      const unwatch = link.watch(onDrop);
      let channel: ssh2.ClientChannel | undefined;
      let pgid: number | undefined;
      const killRemote = () => {
        if (pgid === undefined) return;
        // A separate session on the same connection ends the command's process group.
        try {
          conn.exec(`kill -TERM -- -${pgid} 2>/dev/null; sleep 2; kill -KILL -- -${pgid} 2>/dev/null; true`, (error, stream) => {
            if (!error) stream.resume().on("close", () => undefined).end();
          });
        } catch {
          // The connection is gone ("Not connected"): the host's own `timeout` still ends the command.
        }
      };
      const onAbort = () => {
        killRemote();
        channel?.close();
        finish(abortError(o.signal));
      };
      o.signal?.addEventListener("abort", onAbort, { once: true });
      try {
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
          // A channel's own error (a write into a channel the drop is closing) must not be an
          // unhandled 'error' event: it fails this command only, as an unknown outcome.
          stream.on("error", (error: Error) =>
            finish(new NodropError("E_SSH_DROPPED", `channel to ${options.name} failed while running \`${o.command}\` (${error.message}): whether it took effect is unknown`)),
          );
          stream.on("close", () => finish(undefined));
          stream.end(o.input ?? "");
        });
      } catch (error) {
        // ssh2 throws "Not connected" when the socket is already gone but its close has not arrived yet.
        finish(new NodropError("E_SSH_DROPPED", `connection to ${options.name} (${options.address}) is gone (${(error as Error).message}); \`${o.command}\` did not start`));
      }
    });

  const upload = async (localFile: string, remoteFile: string, uploadOptions: UploadOptions = {}): Promise<void> => {
    const { signal } = uploadOptions;
    if (signal?.aborted) throw abortError(signal);
    // An SFTP channel is a session like a command's: it counts against the host's MaxSessions.
    const release = await sessions.acquire(signal);
    try {
      const link = await connection();
      if (signal?.aborted) throw abortError(signal);
      await sendOverSftp(link, options, localFile, remoteFile, uploadOptions);
    } finally {
      release();
    }
  };

  return {
    name: "ssh",
    host: options.name,
    exec,
    upload,
    connectionsOpened: () => opened,
    async dispose() {
      const current = live;
      const pending = opening;
      live = undefined;
      const ended = () => new NodropError("E_SSH_DROPPED", `connection to ${options.name} (${options.address}) was closed by nodrop`);
      current?.drop(ended(), false);
      if (pending) (await pending.catch(() => undefined))?.drop(ended(), false);
    },
  };
}

/**
 * Copies a file over SFTP on the link's connection (its own channel), 0600 on the host. Settles
 * once: done, the connection dropped (what arrived is partial, and the caller's rename never
 * happens), an abort, or the host refusing (no SFTP subsystem, a full disk).
 */
function sendOverSftp(link: Link, target: SshTarget, localFile: string, remoteFile: string, o: UploadOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (link.dropped) return reject(new NodropError("E_SSH_DROPPED", `${link.dropped.message} before the upload of ${remoteFile} started`));
    let sftp: ssh2.SFTPWrapper | undefined;
    let settled = false;
    const finish = (error?: NodropError) => {
      if (settled) return;
      settled = true;
      unwatch();
      o.signal?.removeEventListener("abort", onAbort);
      sftp?.end();
      if (error) reject(error);
      else resolve();
    };
    const unwatch = link.watch((error) => finish(new NodropError("E_SSH_DROPPED", `${error.message} while uploading ${remoteFile}: the upload is incomplete`)));
    const onAbort = () => finish(abortError(o.signal));
    o.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      link.client.sftp((error, channel) => {
        if (error) return finish(new NodropError("E_EXEC", `${target.name} does not offer SFTP (${error.message}); nodrop sends artifacts over SFTP: enable its subsystem in sshd_config ("Subsystem sftp internal-sftp")`));
        sftp = channel;
        if (settled) return channel.end();
        channel.on("error", (e: Error) => finish(new NodropError("E_SSH_DROPPED", `SFTP channel to ${target.name} failed while uploading ${remoteFile} (${e.message})`)));
        channel.fastPut(localFile, remoteFile, { mode: 0o600, step: (sent, _chunk, total) => o.onProgress?.(sent, total) }, (e?: Error | null) => {
          if (e) finish(new NodropError("E_EXEC", `upload of ${remoteFile} to ${target.name} failed: ${e.message}`));
          else finish();
        });
      });
    } catch (error) {
      finish(new NodropError("E_SSH_DROPPED", `connection to ${target.name} (${target.address}) is gone (${(error as Error).message}); the upload of ${remoteFile} did not start`));
    }
  });
}

/** Opens a verified, authenticated connection (through the jump host when there is one). */
async function connect(target: SshTarget, log: (message: string) => void, link = new Link()): Promise<SshClient> {
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
    const jump = target.jump;
    const jumpLink = new Link();
    jumpClient = await connect(jump, log, jumpLink);
    const jc = jumpClient;
    try {
      sock = await new Promise((resolve, reject) =>
        jc.forwardOut("127.0.0.1", 0, target.address, port, (error, stream) =>
          error ? reject(new NodropError("E_SSH_CONNECT", `jump host ${jump.name} cannot reach ${where}: ${error.message}`)) : resolve(stream),
        ),
      );
    } catch (error) {
      // Nothing will run over the jump connection: end it (it would stay open for the process's life).
      jc.end();
      throw NodropError.is(error) ? error : new NodropError("E_SSH_CONNECT", `jump host ${jump.name} cannot reach ${where}: ${(error as Error).message}`);
    }
    // This connection runs inside the jump connection: when that one drops, so does this one.
    jumpLink.watch((error) => link.drop(new NodropError("E_SSH_DROPPED", `jump host ${jump.name} dropped (${error.message}), so did the connection to ${target.name} (${target.address})`), true));
  }
  const entries = parseKnownHosts(target.hostKeys.knownHosts ?? "");
  let refusal: NodropError | undefined;
  let toRecord: { line: string; seen: string; name: string } | undefined;
  const hostVerifier = (key: Buffer): boolean => {
    const seen = `${keyType(key)} ${fingerprint(key)}`;
    // ssh lowercases the host name before it looks it up (and records it lowercased).
    const address = target.address.toLowerCase();
    const alias = target.name.toLowerCase();
    const names = [knownHostsName(address, port), ...(alias !== address ? [knownHostsName(alias, port)] : [])];
    // Off port 22, ssh also accepts a key recorded for the bare name ("checking without port identifier").
    const bare = port === 22 ? [] : [address, ...(alias !== address ? [alias] : [])];
    const pins = target.hostKeys.fingerprints ?? [];
    const verdict = verifyKnownHost(entries, names, key, bare);
    // Revocation wins over everything, a pinned fingerprint included.
    if (verdict.status === "revoked") {
      refusal = new NodropError("E_SSH_HOSTKEY", `host key of ${where} is revoked in known_hosts (line ${verdict.line}); seen ${seen}`);
      return false;
    }
    if (pins.includes(fingerprint(key))) return true;
    if (verdict.status === "match") return true;
    if (verdict.status === "mismatch" || pins.length > 0) {
      const expected = verdict.status === "mismatch" ? verdict.expected : pins;
      refusal = new NodropError(
        "E_SSH_HOSTKEY",
        `host key of ${where} has CHANGED: seen ${seen}, expected ${expected.join(" or ")}. Someone may be intercepting the connection; if the host was rebuilt, update known hosts.`,
      );
      return false;
    }
    if (target.hostKeys.policy === "accept-new") {
      // A key accepted earlier in this process is known from then on, recorded or not: a later
      // connection (a reconnect, another executor) must see that same key.
      const earlier = acceptedThisRun.get(names[0]!);
      if (earlier && !earlier.equals(key)) {
        refusal = new NodropError(
          "E_SSH_HOSTKEY",
          `host key of ${where} has CHANGED since it was accepted earlier in this run: seen ${seen}, expected ${keyType(earlier)} ${fingerprint(earlier)}. Someone may be intercepting the connection.`,
        );
        return false;
      }
      acceptedThisRun.set(names[0]!, key);
      // Recorded once per file (a first connection that failed to authenticate recorded nothing).
      if (!recordedThisRun.has(`${target.hostKeys.recordTo ?? ""}\0${names[0]}`)) toRecord = { line: knownHostsLine(names[0]!, key), seen, name: names[0]! };
      return true;
    }
    refusal = new NodropError(
      "E_SSH_HOSTKEY",
      `host key of ${where} is unknown: seen ${seen}. Add it to known hosts (ssh-keyscan -p ${port} ${target.address}, then check the fingerprint) or pin it (hostKey fingerprint), or choose hostKeyPolicy: accept-new.`,
    );
    return false;
  };

  const conn = link.client;
  let ready = false;
  await new Promise<void>((resolve, reject) => {
    conn.once("ready", () => {
      ready = true;
      resolve();
    });
    // For the connection's whole life (ssh2 may emit several errors): before ready an error fails
    // the connect; after, it drops the connection, failing what runs on it; never an unhandled event.
    conn.on("error", (error: Error & { level?: string }) => {
      if (ready) return link.drop(new NodropError("E_SSH_DROPPED", `connection to ${where} failed: ${error.message}`), true);
      jumpClient?.end();
      if (refusal) return reject(refusal);
      if (error.level === "client-authentication") {
        return reject(new NodropError("E_SSH_AUTH", `authentication failed for ${where} (methods tried: ${target.privateKey !== undefined ? "publickey " : ""}${target.agent ? "agent" : ""}); check the key and the user`));
      }
      reject(new NodropError("E_SSH_CONNECT", `cannot connect to ${where}: ${error.message}`));
    });
    conn.on("close", () => {
      jumpClient?.end();
      if (ready) link.drop(new NodropError("E_SSH_DROPPED", `connection to ${target.name} (${target.address}) closed`), true);
      // A close with no error first (after an error, the connect was already refused).
      else reject(new NodropError("E_SSH_CONNECT", `cannot connect to ${where}: the connection closed during the handshake`));
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
  if (toRecord) {
    // accept-new is an explicit choice; say exactly what it trusted.
    if (target.hostKeys.recordTo) {
      const failed = await recordHostKey(target.hostKeys.recordTo, toRecord.line);
      if (failed) log(`accepted the new host key of ${where}: ${toRecord.seen}, but could not record it in ${target.hostKeys.recordTo}: ${failed}`);
      else {
        recordedThisRun.add(`${target.hostKeys.recordTo}\0${toRecord.name}`);
        log(`recorded the new host key of ${where}: ${toRecord.seen}, in ${target.hostKeys.recordTo}`);
      }
    } else log(`accepted the new host key of ${where}: ${toRecord.seen} (not recorded: no known hosts file)`);
  }
  return conn;
}

/** Keys accept-new trusted in this process, by known_hosts name ("[address]:port"). */
const acceptedThisRun = new Map<string, Buffer>();
/** Which of those keys are recorded, and where ("file\0name"). */
const recordedThisRun = new Set<string>();

/**
 * Appends a known_hosts line as OpenSSH's add_host_to_hostfile() does: the file's last line gets
 * its missing newline first (else the new entry would be glued onto it), and ~/.ssh is created
 * (0700) when the file is directly in it and it does not exist yet (hostfile_create_user_ssh_dir).
 * Like ssh, failing to record (any other missing directory, no permission) does not fail the
 * connection: ssh says "Failed to add the host to the list of known hosts" and goes on. The key
 * stays trusted for the rest of this process only. Returns why it failed, or undefined.
 */
async function recordHostKey(file: string, line: string): Promise<string | undefined> {
  const sshDir = path.join(os.homedir(), ".ssh");
  if (path.dirname(path.resolve(file)) === sshDir) await mkdir(sshDir, { mode: 0o700 }).catch(() => undefined);
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(file, "a+", 0o600);
    const { size } = await handle.stat();
    let newline = "";
    if (size > 0) {
      const last = Buffer.alloc(1);
      await handle.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) newline = "\n";
    }
    await handle.appendFile(`${newline}${line}\n`);
    return undefined;
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    return e.code === "ENOENT" ? `${path.dirname(file)} does not exist` : (e.code ?? e.message);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

export type { KnownHostEntry };

import {
  type Executor,
  NodropError,
  type ProxyInstance,
  type Proxy,
  type ProxyApplyResult,
  type ProxyCheck,
  type Routing,
  servingInstances,
  type schema,
  shellQuote,
  sleep,
} from "@nodrop/core";
import type { nginxOptionsSchema } from "./options.js";
import { cookieVariable, nginxName, parseRenderedConfig, poolVariable, renderNginxConfig } from "./render.js";
import { type NginxFeatures, nginxFeatures, parseNginxVersion } from "./version.js";

/** The options of the `proxy:` section (those with a default may be left out), and what nginxProxy() needs besides. */
export interface NginxProxyOptions extends schema.Input<typeof nginxOptionsSchema> {
  /** Runs commands on the proxy's host (local or SSH). */
  executor: Executor;
  /** The app name; names the upstreams and the pool variable. */
  app: string;
}

interface Worker {
  pid: number;
  shuttingDown: boolean;
}

/**
 * Proxy adapter for open-source nginx (1.22 and newer). It owns one include file and follows
 * the safe sequence: write atomically keeping the previous file, `nginx -t` (restore on failure),
 * reload, confirm a new worker generation and no [emerg] in the log (restore on failure), then
 * wait until every worker of the old generation has exited.
 */
export function nginxProxy(options: NginxProxyOptions): Proxy {
  const { executor, configFile } = options;
  const name = nginxName(options.app);
  const sudo = options.sudo ? "sudo -n " : "";
  const nginx = [
    sudo + shellQuote(options.binary ?? "nginx"),
    ...(options.prefix ? ["-p", shellQuote(options.prefix)] : []),
    ...(options.conf ? ["-c", shellQuote(options.conf)] : []),
  ].join(" ");
  const file = shellQuote(configFile);
  // Temp files sit beside the include file under names nobody can guess (mktemp creates them
  // exclusively, so a link planted at a temp name is never followed) and are renamed into place:
  // rename(2) replaces what is at the target, it never writes through it.
  const tmpTemplate = `${shellQuote(`${configFile}.nodrop-tmp.`)}XXXXXXXXXX`;
  const prevTemplate = `${shellQuote(`${configFile}.nodrop-prev.`)}XXXXXXXXXX`;
  // The include file itself must be a plain file: nodrop replaces it by rename, and a link there
  // (which would be replaced by a file, or written through by hand) means the setup is not the one
  // nodrop expects. Exit 3 names it.
  const refuseLink =
    `if [ -L ${file} ]; then printf '%s is a symbolic link (to %s) on %s; nodrop replaces this file by rename and does not write through links: make it a regular file, or point proxy.configFile at the target\\n' ${file} "$(readlink -- ${file})" ${shellQuote(executor.host)} >&2; exit 3; fi\n` +
    `if [ -e ${file} ] && [ ! -f ${file} ]; then printf '%s is not a regular file on %s\\n' ${file} ${shellQuote(executor.host)} >&2; exit 3; fi\n`;
  const pidFile = shellQuote(options.pidFile ?? "/run/nginx.pid");
  const confirmTimeout = options.confirmTimeout ?? 10_000;
  const drainTimeout = options.drainTimeout ?? 90_000;
  const pollInterval = options.pollInterval ?? 25;
  let queue: Promise<unknown> = Promise.resolve();

  const run = (command: string, signal?: AbortSignal, input?: string) => executor.exec(command, { signal, input, timeoutMs: 60_000 });

  const workers = async (signal?: AbortSignal): Promise<Worker[]> => {
    const result = await run(`p=$(cat ${pidFile}) && ps -o pid=,args= --ppid "$p"`, signal);
    if (result.code !== 0) {
      throw new NodropError("E_PROXY_RELOAD", `cannot list nginx workers on ${executor.host} (pid file ${options.pidFile ?? "/run/nginx.pid"}): ${result.stderr.trim() || `exit ${result.code}`}`);
    }
    return result.stdout
      .split("\n")
      .map((line) => /^\s*(\d+)\s+nginx: worker process( is shutting down)?/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ pid: Number(m[1]), shuttingDown: m[2] !== undefined }));
  };

  const readCurrent = async (signal?: AbortSignal) => {
    const result = await run(`if [ -f ${file} ] && [ ! -L ${file} ]; then cat ${file}; fi`, signal);
    return result.code === 0 ? parseRenderedConfig(result.stdout) : undefined;
  };

  const restore = async (previous: string | undefined) => {
    // The previous file goes back whatever happens next: disk must match the config in force.
    await run(previous ? `mv -fT -- ${shellQuote(previous)} ${file}` : `rm -f -- ${file}`);
  };

  const errorLogSize = async (signal?: AbortSignal): Promise<number | undefined> => {
    if (!options.errorLog) return undefined;
    const result = await run(`stat -c %s ${shellQuote(options.errorLog)} 2>/dev/null || echo 0`, signal);
    return Number(result.stdout.trim()) || 0;
  };

  /**
   * [emerg]/[alert] lines that belong to our reload: those after the last "reconfiguring" line
   * written since `offset`. Lines before it come from an earlier reload the master was still busy
   * with (a refused bind() is retried for 2.5 s), and with no such line yet the master has not
   * started on our signal.
   */
  const reloadErrors = async (offset: number | undefined): Promise<string[]> => {
    if (!options.errorLog || offset === undefined) return [];
    const result = await run(`tail -c +${offset + 1} ${shellQuote(options.errorLog)} 2>/dev/null || true`);
    const lines = result.stdout.split("\n");
    const start = lines.findLastIndex((line) => line.includes("reconfiguring"));
    return start < 0 ? [] : lines.slice(start + 1).filter((line) => /\[(emerg|alert)\]/.test(line));
  };

  let detected: { version: string; features: NginxFeatures } | undefined;
  /** What this nginx is and supports, from `nginx -v`, asked once (until it answers). */
  const probeVersion = async (signal?: AbortSignal) => {
    if (detected) return { ...detected, output: "" };
    const result = await run(`${nginx} -v 2>&1`, signal);
    const version = parseNginxVersion(result.stdout);
    if (version) detected = { version, features: nginxFeatures(version) };
    return { ...detected, output: result.stdout.trim() || `exit ${result.code}` };
  };
  const features = async (signal?: AbortSignal) => (await probeVersion(signal)).features;

  const apply = async (routing: Routing, instances: readonly ProxyInstance[], signal?: AbortSignal): Promise<ProxyApplyResult> => {
    const current = await readCurrent(signal);
    const generation = (current?.generation ?? 0) + 1;
    // A timed switch runs on the proxy host's clock, which nginx's workers read.
    let switchAt: number | undefined;
    let clockOffset = 0;
    if (routing.switchDefault) {
      const now = await run("date +%s%3N", signal);
      const hostNow = Number(now.stdout.trim());
      if (!Number.isFinite(hostNow) || hostNow <= 0) throw new NodropError("E_PROXY_RELOAD", `cannot read the clock on ${executor.host}: ${now.stderr.trim() || now.stdout.trim()}`);
      clockOffset = hostNow - Date.now();
      switchAt = hostNow + routing.switchDefault.afterMs;
    }
    const nativeSticky = routing.affinity ? (await features(signal))?.stickyAndDrain === true : false;
    const text = renderNginxConfig({ name, routing, instances, generation, switchAt, nativeSticky, versionCookie: options.versionCookie ?? "nodrop_version" });
    const before = await workers(signal);
    if (before.length === 0) throw new NodropError("E_PROXY_RELOAD", `nginx on ${executor.host} has no worker processes; is it running?`);
    const oldPids = new Set(before.map((w) => w.pid));

    // From here on, no abort until the change is finished or undone: a half-applied proxy change is worse than a late stop.
    // The new file gets the old one's mode (0644 for a first one); the previous file is kept under
    // its own temp name until nginx has taken the new one. On any failure the temps are removed.
    const write = await run(
      `${refuseLink}t=; p=; ok=; trap '[ -n "$ok" ] || rm -f -- \${t:+"$t"} \${p:+"$p"}' EXIT\n` +
        `set -e\nt=$(mktemp ${tmpTemplate})\n` +
        `if [ -f ${file} ]; then p=$(mktemp ${prevTemplate}); cp -p -- ${file} "$p"; chmod --reference=${file} -- "$t"; echo "prev $p"; else chmod 644 -- "$t"; fi\n` +
        `cat > "$t"\nmv -fT -- "$t" ${file}\nok=1`,
      undefined,
      text,
    );
    if (write.code !== 0) {
      const why = write.stderr.trim() || `exit ${write.code}`;
      throw new NodropError(write.code === 3 ? "E_PROXY_SETUP" : "E_PROXY_RELOAD", `cannot write ${configFile} on ${executor.host}: ${why}`);
    }
    const previous = /^prev (.+)$/m.exec(write.stdout)?.[1];

    const test = await run(`${nginx} -t 2>&1`);
    if (test.code !== 0) {
      await restore(previous);
      throw new NodropError("E_PROXY_TEST", `nginx -t failed on ${executor.host}; the previous ${configFile} was restored and nginx was not reloaded:\n${lastLines(test.stdout)}`);
    }

    const logOffset = await errorLogSize();
    const t0 = performance.now();
    const reload = await run(`${nginx} -s reload 2>&1`);
    if (reload.code !== 0) {
      await restore(previous);
      throw new NodropError("E_PROXY_RELOAD", `nginx -s reload failed on ${executor.host}; the previous ${configFile} was restored:\n${lastLines(reload.stdout)}`);
    }

    // `nginx -s reload` only sends a signal: confirm that a new generation of workers exists.
    let confirmed = false;
    let emerg: string[] = [];
    for (let poll = 1; performance.now() - t0 < confirmTimeout; poll++) {
      const now = await workers();
      if (now.some((w) => !oldPids.has(w.pid) && !w.shuttingDown)) {
        confirmed = true;
        break;
      }
      // A master that refused the new config says so only in its log; stop waiting once it has.
      if (poll % 10 === 0 && (emerg = await reloadErrors(logOffset)).length > 0) break;
      await sleep(pollInterval);
    }
    const confirmMs = performance.now() - t0;
    if (confirmed) emerg = await reloadErrors(logOffset);
    if (!confirmed || emerg.length > 0) {
      await restore(previous);
      const why = emerg.length > 0 ? `nginx logged:\n${emerg.slice(-5).join("\n")}` : `no new worker generation within ${confirmTimeout}ms`;
      throw new NodropError("E_PROXY_RELOAD", `nginx reload on ${executor.host} did not take effect (${why}); the previous ${configFile} was restored and the old config is still in force`);
    }

    // The new file is in force: the previous one is no longer needed.
    if (previous) await run(`rm -f -- ${shellQuote(previous)}`);

    // The old generation still routes with the old config until its workers exit. Its workers no
    // longer take new requests; what keeps one alive is a long-lived connection (WebSocket, SSE).
    const d0 = performance.now();
    let cut = 0;
    for (;;) {
      const now = await workers();
      if (!now.some((w) => oldPids.has(w.pid))) break;
      if (performance.now() - d0 > drainTimeout) {
        const removed = instances.filter((i) => !servingInstances(routing).has(i.id));
        cut = await heldConnections(oldPids, removed);
        if ((options.onDrainTimeout ?? "cut") === "fail") {
          throw new NodropError(
            "E_PROXY_DRAIN",
            `nginx on ${executor.host}: workers of the previous generation (${[...oldPids].join(", ")}) still running after ${drainTimeout}ms with ${cut} connections to removed instances; the new routing is in force (set worker_shutdown_timeout below proxy.drainTimeout)`,
          );
        }
        break;
      }
      await sleep(pollInterval);
    }
    const drainMs = performance.now() - d0;
    if (switchAt !== undefined) {
      // The old generation stopped taking requests long before; return once the switch happened.
      const wait = switchAt + 50 - (Date.now() + clockOffset);
      if (wait > 0) await sleep(wait);
    }
    return { generation: String(generation), confirmMs, drainMs, cut };
  };

  /** Connections the given nginx workers hold to these instances (ss on the proxy host). */
  const heldConnections = async (pids: ReadonlySet<number>, targets: readonly ProxyInstance[]): Promise<number> => {
    if (targets.length === 0) return 0;
    const peers = new Set(targets.map((t) => `${t.address.includes(":") ? `[${t.address}]` : t.address}:${t.port}`));
    const result = await run("ss -Htnp state established 2>/dev/null || true");
    let count = 0;
    for (const line of result.stdout.split("\n")) {
      const columns = line.trim().split(/\s+/);
      const pid = /pid=(\d+)/.exec(line)?.[1];
      if (columns[3] && peers.has(columns[3]) && pid && pids.has(Number(pid))) count += 1;
    }
    return count;
  };

  return {
    name: "nginx",
    capabilities: { versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true },
    async check(context = {}): Promise<ProxyCheck> {
      const details: string[] = [];
      let ok = true;
      const probe = await probeVersion(context.signal);
      if (probe.version && probe.features) {
        const f = probe.features;
        details.push(`nginx ${probe.version} on ${executor.host} (keepalive_min_timeout: ${f.keepaliveMinTimeout ? "yes" : "no"}, sticky/drain: ${f.stickyAndDrain ? "yes" : "no"})`);
      } else {
        ok = false;
        details.push(`cannot run ${options.binary ?? "nginx"} on ${executor.host}: ${probe.output}`);
      }
      const linked = await run(refuseLink, context.signal);
      if (linked.code === 3) {
        ok = false;
        details.push(linked.stderr.trim());
      }
      const dump = await run(`${nginx} -T 2>&1`, context.signal);
      if (dump.code !== 0) {
        ok = false;
        details.push(`nginx -T fails: ${lastLines(dump.stdout, 3)}${dump.stdout.includes(configFile) ? "" : ` (if ${configFile} does not exist yet, run \`nodrop init\`)`}`);
      } else {
        if (dump.stdout.includes(`# configuration file ${configFile}:`)) details.push(`${configFile} is included`);
        else {
          ok = false;
          details.push(`${configFile} is not included: add \`include ${configFile};\` inside http {} (run \`nodrop init\` to create it)`);
        }
        const variable = poolVariable(name).replace("$", "\\$");
        if (new RegExp(`proxy_pass\\s+https?://${variable}\\b`).test(dump.stdout)) details.push(`proxy_pass uses ${poolVariable(name)}`);
        else {
          ok = false;
          details.push(`no \`proxy_pass http://${poolVariable(name)};\` found in the nginx config: point your location at it`);
        }
        const cookie = cookieVariable(name).replace("$", "\\$");
        if (new RegExp(`add_header\\s+Set-Cookie\\s+${cookie}\\b`).test(dump.stdout)) details.push(`the version cookie is set (add_header Set-Cookie ${cookieVariable(name)})`);
        else details.push(`note: no \`add_header Set-Cookie ${cookieVariable(name)} always;\`: clients are not pinned to the version that served them (half-split and sticky need it)`);
        if (!/^\s*worker_shutdown_timeout\s/m.test(dump.stdout)) details.push("warning: worker_shutdown_timeout is not set; a stuck connection can hold a drain until proxy.drainTimeout");
      }
      try {
        const w = await workers(context.signal);
        if (w.length === 0) {
          ok = false;
          details.push("nginx master has no workers");
        } else details.push(`nginx master running with ${w.filter((x) => !x.shuttingDown).length} workers`);
      } catch (error) {
        ok = false;
        details.push((error as Error).message);
      }
      return { ok, details };
    },
    apply(routing, instances, context = {}) {
      // Reloads are serialized: generations must not pile up (reload storms).
      const next = queue.then(() => apply(routing, instances, context.signal));
      queue = next.catch(() => undefined);
      return next;
    },
    async current(context = {}) {
      return (await readCurrent(context.signal))?.routing;
    },
    async initialize(routing, instances, context = {}) {
      const exists = await run(`${refuseLink}[ -f ${file} ]`, context.signal);
      if (exists.code === 3) throw new NodropError("E_PROXY_SETUP", `cannot use ${configFile} on ${executor.host}: ${exists.stderr.trim()}`);
      let wrote = false;
      if (exists.code !== 0) {
        const text = renderNginxConfig({ name, routing, instances, generation: 1, versionCookie: options.versionCookie ?? "nodrop_version" });
        // Exclusively created beside it, then renamed into place (-T: never into a planted directory link).
        const result = await run(
          `mkdir -p -- "$(dirname -- ${file})" || exit 1\n${refuseLink}t=; ok=; trap '[ -n "$ok" ] || rm -f -- \${t:+"$t"}' EXIT\nset -e\nt=$(mktemp ${tmpTemplate})\nchmod 644 -- "$t"\ncat > "$t"\nmv -fT -- "$t" ${file}\nok=1`,
          context.signal,
          text,
        );
        if (result.code !== 0) throw new NodropError("E_PROXY_SETUP", `cannot write ${configFile} on ${executor.host}: ${result.stderr.trim()}`);
        wrote = true;
      }
      return {
        wrote,
        file: configFile,
        instructions: [
          `inside http {}:    include ${configFile};`,
          `in your location:  proxy_pass http://${poolVariable(name)};`,
          `in your location:  add_header Set-Cookie ${cookieVariable(name)} always;   (half-split and sticky)`,
          "then test and reload nginx yourself (nginx -t && nginx -s reload); `nodrop plan` checks the setup",
        ],
      };
    },
    async dispose() {
      await executor.dispose?.();
    },
  };
}

function lastLines(text: string, count = 8): string {
  return text.trim().split("\n").slice(-count).join("\n");
}

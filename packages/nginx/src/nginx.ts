import { createHash } from "node:crypto";
import {
  type Executor,
  type InstanceSpec,
  NodropError,
  type ProxyInstance,
  type Proxy,
  type ProxyCapabilities,
  type ProxyApplyResult,
  type ProxyCheck,
  type ProxyContext,
  type Routing,
  type TrafficCounts,
  type TrafficWindow,
  addCounts,
  endpoint,
  distinctRoutings,
  allInOrder,
  measureClockOffset,
  servedEndpoints,
  type schema,
  shellQuote,
  sleep,
} from "@nodrop/core";
import { accessLogSetupProblems, formatCursor, parseAccessLog, parseCursor, TRAFFIC_READ_BYTES, trafficCommand } from "./access-log.js";
import type { nginxOptionsSchema } from "./options.js";
import { cookieVariable, nginxName, parseRenderedConfig, poolVariable, renderNginxConfig } from "./render.js";
import { SwitchTiming, lateSwitchWarning } from "./switch-timing.js";
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
/** What nginx (open source, 1.22 and later) can put into effect: every routing core defines. */
export const NGINX_CAPABILITIES: ProxyCapabilities = Object.freeze({ versionPinning: true, drainsOldRouting: true, timedSwitch: true, affinity: true, poolSlots: true, backgroundDrain: true, split: true });

/** `ps -o pid=,args=` lines of nginx workers: pid, and whether the worker is shutting down (its old generation's title). */
function parseWorkers(stdout: string): { pid: number; shuttingDown: boolean }[] {
  return stdout
    .split("\n")
    .map((line) => /^\s*(\d+)\s+nginx: worker process( is shutting down)?/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), shuttingDown: m[2] !== undefined }));
}

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
  const tmpGlob = `${shellQuote(`${configFile}.nodrop-tmp.`)}*`;
  // Earlier versions kept the previous file under this name until the reload was confirmed.
  const prevGlob = `${shellQuote(`${configFile}.nodrop-prev.`)}*`;
  // The text nginx routed by before a change, one record per change (`.nodrop-unconfirmed.<generation>`):
  // written in the same command that puts the new file in place, removed once the change's reload
  // is confirmed and its old generation has drained (with every older record: nothing older runs
  // then). A deploy killed in between leaves it, so the next one knows nginx may still route by it.
  // A reload signalled but not confirmed records the new text too (`-new.<generation>`): either may run.
  // The generation comes from the file (anyone's to edit on the proxy host): only a plain integer names a record.
  const recordNumber = (generation: number) => (Number.isSafeInteger(generation) && generation > 0 ? generation : 0);
  const unconfirmedAt = (generation: number, kind: "" | "-new" = "") => shellQuote(`${configFile}.nodrop-unconfirmed${kind}.${recordNumber(generation)}`);
  const unconfirmedGlob = `${shellQuote(`${configFile}.nodrop-unconfirmed`)}*`;
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
  // How far ahead a timed switch goes on this nginx, from the parses and closes seen in this run.
  const switchTiming = new SwitchTiming(pollInterval);
  // Set when a change ended with the routing in force unknown, until a change is confirmed: the
  // file may then say something else than what nginx routes by, so current() must not vouch for it.
  let inDoubt: string | undefined;

  const run = (command: string, signal?: AbortSignal, input?: string) => executor.exec(command, { signal, input, timeoutMs: 60_000 });

  const workers = async (signal?: AbortSignal): Promise<Worker[]> => {
    const result = await run(`p=$(cat ${pidFile}) && ps -o pid=,args= --ppid "$p"`, signal);
    if (result.code !== 0) {
      throw new NodropError("E_PROXY_RELOAD", `cannot list nginx workers on ${executor.host} (pid file ${options.pidFile ?? "/run/nginx.pid"}): ${result.stderr.trim() || `exit ${result.code}`}`);
    }
    return parseWorkers(result.stdout);
  };

  /**
   * Which of `pids` still run as nginx workers, asked of the pids themselves rather than of the
   * master the pid file names: a restart or a binary upgrade while a drain is pending leaves the old
   * generation under another parent. A pid reused by another program does not count.
   */
  const workersAmong = async (pids: ReadonlySet<number>): Promise<Worker[]> => {
    if (pids.size === 0) return [];
    const result = await run(`ps -o pid=,args= -p ${[...pids].map((pid) => String(Math.trunc(pid))).join(",")}; true`);
    if (result.code !== 0) throw new NodropError("E_PROXY_RELOAD", `cannot list nginx workers on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
    return parseWorkers(result.stdout).filter((w) => pids.has(w.pid));
  };

  /** The include file's text as it is now; undefined when there is none. Exit 3: a link or no regular file. */
  const readText = async (signal?: AbortSignal): Promise<string | undefined> => {
    const result = await run(`${refuseLink}if [ -f ${file} ]; then echo present; cat -- ${file}; else echo absent; fi`, signal);
    if (result.code === 3) throw new NodropError("E_PROXY_SETUP", `cannot use ${configFile} on ${executor.host}: ${result.stderr.trim()}`);
    if (result.code !== 0) throw new NodropError("E_PROXY_RELOAD", `cannot read ${configFile} on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
    const newline = result.stdout.indexOf("\n");
    const head = result.stdout.slice(0, newline);
    if (head === "absent") return undefined;
    if (head !== "present") throw new NodropError("E_PROXY_RELOAD", `cannot read ${configFile} on ${executor.host}: unexpected output`);
    return result.stdout.slice(newline + 1);
  };

  const readCurrent = async (signal?: AbortSignal) => {
    const result = await run(`if [ -f ${file} ] && [ ! -L ${file} ]; then cat ${file}; fi`, signal);
    return result.code === 0 ? parseRenderedConfig(result.stdout) : undefined;
  };

  /**
   * Puts `text` in place of the include file atomically (or removes the file when `text` is
   * undefined: there was none). The text goes to a temp file beside it that mktemp creates
   * exclusively, is checked against its SHA-256 (a connection dropped while it was sent leaves a
   * short file, which must never go into place), gets the old file's mode and is renamed over the
   * file. Leftovers of an earlier run that died between mktemp and rename (`.nodrop-tmp.`, and the
   * `.nodrop-prev.` copies older versions kept) are removed first: nodrop is the only writer
   * (the deploy lock), and a late write of a dropped connection whose temp is gone cannot land.
   * Resolves with the exit code and stderr: the caller decides what a failure means.
   */
  const replaceFile = async (text: string | undefined, generation?: number): Promise<{ ok: boolean; why: string; code: number | null }> => {
    const sweep = `for f in ${tmpGlob} ${prevGlob}; do if [ "$f" != "\${t:-}" ] && [ -f "$f" ] && [ ! -L "$f" ]; then rm -f -- "$f"; fi; done\n`;
    const script =
      text === undefined
        ? `${refuseLink}set -e\nt=\n${sweep}rm -f -- ${file}`
        : `${refuseLink}t=; u=; ok=; trap '[ -n "$ok" ] || rm -f -- \${t:+"$t"} \${u:+"$u"}' EXIT\nset -e\nt=$(mktemp ${tmpTemplate})\n${sweep}` +
          `if [ -f ${file} ]; then chmod --reference=${file} -- "$t"; else chmod 644 -- "$t"; fi\n` +
          `cat > "$t"\n` +
          `if [ "$(sha256sum < "$t" | cut -c1-64)" != ${createHash("sha256").update(text, "utf8").digest("hex")} ]; then echo "the text arrived incomplete (the connection dropped while it was sent?)" >&2; exit 4; fi\n` +
          // What nginx routes by until this change is in force and drained (a restore records nothing: generation undefined).
          (generation === undefined ? "" : `if [ -f ${file} ]; then u=$(mktemp ${tmpTemplate}); cat -- ${file} > "$u"; mv -fT -- "$u" ${unconfirmedAt(generation)}; u=; fi\n`) +
          `mv -fT -- "$t" ${file}\nok=1`;
    const result = await run(script, undefined, text);
    return { ok: result.code === 0, why: result.stderr.trim() || `exit ${result.code}`, code: result.code };
  };

  /**
   * Once the reload of change `generation` is confirmed and its old generation has drained, nothing
   * routes by a text older than the file's: that change's record goes, with every older one (a later
   * change's, written while this drain ran in the background, stays). Best effort: a record left
   * over only costs the next deploy one reload.
   */
  const clearUnconfirmed = async (generation: number): Promise<void> => {
    await run(
      `for f in ${unconfirmedGlob}; do n=\${f##*.}; case "$n" in ''|*[!0-9]*) continue;; esac; if [ "$n" -le ${recordNumber(generation)} ] && [ -f "$f" ] && [ ! -L "$f" ]; then rm -f -- "$f"; fi; done`,
    ).catch(() => undefined);
  };

  /**
   * Records `text` for change `generation` as what nginx may route by (its reload was signalled but
   * not confirmed: the new generation may have loaded it, whatever the file is put back to).
   */
  const recordUnconfirmed = async (text: string, generation: number): Promise<void> => {
    await run(`u=; ok=; trap '[ -n "$ok" ] || rm -f -- \${u:+"$u"}' EXIT\nset -e\nu=$(mktemp ${tmpTemplate})\ncat > "$u"\nmv -fT -- "$u" ${unconfirmedAt(generation, "-new")}\nok=1`, undefined, text).catch(() => undefined);
  };

  /**
   * The routings on record for changes whose reload or drain never finished, those that differ from
   * the file's: the file first and every record after it, in one command.
   */
  const unconfirmedRoutings = async (signal?: AbortSignal): Promise<Routing[]> => {
    const mark = "# nodrop-unconfirmed-record";
    const plain = (f: string) => `if [ -f ${f} ] && [ ! -L ${f} ]; then cat -- ${f}; fi`;
    const result = await run(`echo '${mark}'; ${plain(file)}; for f in ${unconfirmedGlob}; do echo '${mark}'; ${plain('"$f"')}; done`, signal);
    if (result.code !== 0) return [];
    const [now, ...records] = result.stdout.split(`${mark}\n`).slice(1).map((text) => parseRenderedConfig(text)?.routing);
    return distinctRoutings(records.filter((r): r is Routing => r !== undefined), now ? [now] : []);
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

  /**
   * After `nginx -s reload` (exit 0): waits for a worker that is not one of `oldPids` and not
   * shutting down (a new generation), and reads the error log for [emerg] after the master's
   * `reconfiguring` line. "refused": the master said it kept the old config.
   */
  const confirmReload = async (oldPids: ReadonlySet<number>, logOffset: number | undefined, t0: number): Promise<{ outcome: "confirmed" | "refused" | "timeout"; emerg: string[] }> => {
    let emerg: string[] = [];
    for (let poll = 1; performance.now() - t0 < confirmTimeout; poll++) {
      const now = await workers();
      if (now.some((w) => !oldPids.has(w.pid) && !w.shuttingDown)) {
        emerg = await reloadErrors(logOffset);
        return { outcome: emerg.length > 0 ? "refused" : "confirmed", emerg };
      }
      // A master that refused the new config says so only in its log; stop waiting once it has.
      if (poll % 10 === 0 && (emerg = await reloadErrors(logOffset)).length > 0) return { outcome: "refused", emerg };
      await sleep(pollInterval);
    }
    return { outcome: "timeout", emerg: [] };
  };

  /**
   * Waits until no worker of `oldPids` (the generation before a confirmed reload) runs. That
   * generation still routes with the old config, but takes no new requests; what keeps a worker
   * alive is a long-lived connection (WebSocket, SSE), counted and left to be cut at the ceiling.
   */
  const drainGeneration = async (routing: Routing, instances: readonly ProxyInstance[], oldPids: ReadonlySet<number>): Promise<{ drainMs: number; cut: number }> => {
    const d0 = performance.now();
    for (;;) {
      if ((await workersAmong(oldPids)).length === 0) return { drainMs: performance.now() - d0, cut: 0 };
      if (performance.now() - d0 > drainTimeout) break;
      await sleep(pollInterval);
    }
    // Endpoints of the fleet (every slot of every instance) that the new routing does not serve.
    const kept = servedEndpoints(routing, instances, (id) => instances.find((i) => i.id === id)?.port);
    const cut = await heldConnections(oldPids, fleetEndpoints(instances).filter((e) => !kept.has(e)));
    if ((options.onDrainTimeout ?? "cut") === "fail") {
      throw new NodropError(
        "E_PROXY_DRAIN",
        `nginx on ${executor.host}: workers of the previous generation (${[...oldPids].join(", ")}) still running after ${drainTimeout}ms with ${cut} connections to removed instances (set worker_shutdown_timeout below proxy.drainTimeout)`,
      );
    }
    return { drainMs: performance.now() - d0, cut };
  };

  /**
   * Whether every worker of `oldPids` is shutting down or gone: the master starts the new
   * generation before it signals the old one, and an old worker keeps accepting connections (with
   * the old config) until it handles that signal and closes its listeners, which it does as it
   * renames itself "shutting down". False when that takes longer than the confirm timeout.
   */
  const oldGenerationClosed = async (oldPids: ReadonlySet<number>): Promise<boolean> => {
    const t0 = performance.now();
    while (performance.now() - t0 < confirmTimeout) {
      if (!(await workersAmong(oldPids)).some((w) => !w.shuttingDown)) return true;
      await sleep(pollInterval);
    }
    return false;
  };

  const describeFailure = (error: unknown) => (error instanceof Error ? error.message : String(error));

  /**
   * The change as a sequence of stages. A failure is handled by the stage reached:
   *   before   nothing changed on the host                          → previous
   *   written  the file may hold the new text (its command ran, or its outcome is unknown),
   *            nginx not signalled                                  → restore the file: previous, else unknown
   *   signalled `nginx -s reload` ran or its outcome is unknown, the new generation not confirmed
   *            → restore the file, then (unless the master itself logged that it refused the new
   *              config) reload again and confirm a new generation: previous; anything failing: unknown
   *   confirmed the new generation runs                             → new (a failed drain is reported as such)
   */
  const apply = async (routing: Routing, instances: readonly ProxyInstance[], signal?: AbortSignal, backgroundDrain = false, givenSwitchAt?: number): Promise<ProxyApplyResult> => {
    type Stage = "before" | "written" | "signalled" | "confirmed";
    let stage: Stage = "before";
    // What the master last said about the reload, when it refused it by its own log.
    let refusedByMaster = false;
    let previousText: string | undefined;
    let newText: string | undefined;
    let generation: number | undefined;
    // A switch instant is set from here: it must cover the write, `nginx -t` and the reload.
    const started = performance.now();
    try {
      // Three reads at once (over SSH, a round trip each): the file, the host's clock for a timed
      // switch (nginx's workers read that clock), and the workers the reload will replace.
      const [text0, clock, before] = await allInOrder([
        readText(signal),
        routing.switchDefault ? measureClockOffset(executor, { samples: 1, signal }).catch((error: unknown) => Promise.reject(new NodropError("E_PROXY_RELOAD", describeFailure(error), { cause: error }))) : Promise.resolve(undefined),
        workers(signal),
      ] as const);
      previousText = text0;
      const current = previousText === undefined ? undefined : parseRenderedConfig(previousText);
      generation = (current?.generation ?? 0) + 1;
      let switchAt: number | undefined;
      let switchDelay = 0;
      // The host's clock is Date.now() plus something between the offset's lower end (the reading
      // minus its way back: about where a command's reading falls) and its upper end, a round trip
      // later. The instant is set, and the time left before a given one judged, as if the host were
      // ahead by the most; the wait for it to pass counts the least. The late-switch check dates
      // the `ps` that saw the old generation closed the way the offset dated the `date`.
      const aheadAtLeast = clock?.offsetMs ?? 0;
      const aheadAtMost = clock ? clock.offsetMs + clock.errorMs : 0;
      if (routing.switchDefault && clock) {
        // Whole milliseconds: $msec is compared with the instant digit by digit.
        const hostNow = Math.round(Date.now() + aheadAtMost);
        // An instant the caller gave (proxies switching together) is already on this host's clock.
        switchDelay = givenSwitchAt === undefined ? switchTiming.delayFor(routing.switchDefault.afterMs) : Math.round(givenSwitchAt - hostNow);
        const tooClose = givenSwitchAt === undefined ? undefined : switchTiming.givenInstantProblem(executor.host, switchDelay);
        if (tooClose) throw new NodropError("E_PROXY_RELOAD", tooClose, { routingInForce: "previous" });
        switchAt = hostNow + switchDelay;
      }
      const nativeSticky = routing.affinity ? (await features(signal))?.stickyAndDrain === true : false;
      const text = renderNginxConfig({ name, routing, instances, generation, switchAt, nativeSticky, versionCookie: options.versionCookie ?? "nodrop_version" });
      newText = text;
      if (before.length === 0) throw new NodropError("E_PROXY_RELOAD", `nginx on ${executor.host} has no worker processes; is it running?`);
      const oldPids = new Set(before.map((w) => w.pid));

      // From here on, no abort until the change is finished or undone: a half-applied proxy change is worse than a late stop.
      // The write counts as done from the moment its command is sent: a dropped connection leaves its outcome unknown.
      stage = "written";
      const write = await replaceFile(text, generation);
      if (!write.ok) {
        if (write.code === 3) {
          stage = "before";
          throw new NodropError("E_PROXY_SETUP", `cannot write ${configFile} on ${executor.host}: ${write.why}`);
        }
        throw new NodropError("E_PROXY_RELOAD", `cannot write ${configFile} on ${executor.host}: ${write.why}`);
      }

      // The error log's size beside the test: what the reload's refusal would add comes after it
      // (and after the master's "reconfiguring" line, which `nginx -t` never writes).
      const timedTest = async () => {
        const testStarted = performance.now();
        const result = await run(`${nginx} -t 2>&1`);
        switchTiming.noteParse(performance.now() - testStarted);
        return result;
      };
      const [test, logOffset] = await allInOrder([timedTest(), errorLogSize()] as const);
      if (test.code !== 0) throw new NodropError("E_PROXY_TEST", `nginx -t failed on ${executor.host}\n${lastLines(test.stdout)}`);

      const t0 = performance.now();
      stage = "signalled";
      const reload = await run(`${nginx} -s reload 2>&1`);
      // A signaller that exits non-zero sent nothing (it parses the config before it signals).
      if (reload.code !== 0) {
        stage = "written";
        throw new NodropError("E_PROXY_RELOAD", `nginx -s reload failed on ${executor.host}\n${lastLines(reload.stdout)}`);
      }

      // `nginx -s reload` only sends a signal: confirm that a new generation of workers exists.
      const confirmation = await confirmReload(oldPids, logOffset, t0);
      const confirmMs = performance.now() - t0;
      if (confirmation.outcome !== "confirmed") {
        refusedByMaster = confirmation.outcome === "refused";
        const why = refusedByMaster ? `: the master refused the new config and kept its workers\n${confirmation.emerg.slice(-5).join("\n")}` : ` (no new worker generation within ${confirmTimeout}ms)`;
        throw new NodropError("E_PROXY_RELOAD", `nginx reload on ${executor.host} did not take effect${why}`);
      }
      stage = "confirmed";
      inDoubt = undefined;

      const drain = () => drainGeneration(routing, instances, oldPids);
      const waitSwitch = async () => {
        // The old generation stopped taking requests long before; return once the switch happened.
        const wait = switchAt === undefined ? 0 : switchAt + 50 - (Date.now() + aheadAtLeast);
        if (wait > 0) await sleep(wait);
      };
      // A timed switch holds only if the old generation closed before its instant: see that it did.
      // Every reload is timed so (one `ps` more): the next switch is set from what this nginx needs.
      const closed = await oldGenerationClosed(oldPids);
      if (closed) switchTiming.noteClose(performance.now() - started);
      const late = switchAt === undefined ? undefined : lateSwitchWarning(executor.host, switchAt, closed ? Date.now() + aheadAtLeast : undefined, switchDelay);
      const warnings = late === undefined ? {} : { warnings: [late] };
      const change = generation;
      if (backgroundDrain && closed) {
        // The caller goes on while the old generation drains; a failed drain still says the new routing is in force.
        const drained = drain().then(
          async (result) => (await clearUnconfirmed(change), result),
          async (error: unknown) => Promise.reject(await settle("confirmed", error, previousText, false)),
        );
        drained.catch(() => undefined);
        await waitSwitch();
        return { generation: String(generation), confirmMs, drainMs: 0, cut: 0, drained, ...warnings };
      }
      const { drainMs, cut } = await drain();
      await clearUnconfirmed(change);
      await waitSwitch();
      return { generation: String(generation), confirmMs, drainMs, cut, ...warnings };
    } catch (error) {
      const failure = await settle(stage, error, previousText, refusedByMaster, newText, generation);
      inDoubt = failure.routingInForce === "unknown" ? failure.message.split("\n")[0] : undefined;
      throw failure;
    }
  };

  /** The error a failed apply throws, after undoing what the stage reached requires; it says what is in force. */
  const settle = async (stage: "before" | "written" | "signalled" | "confirmed", error: unknown, previousText: string | undefined, refusedByMaster: boolean, newText?: string, generation?: number): Promise<NodropError> => {
    const code = NodropError.is(error) ? error.code : "E_PROXY_RELOAD";
    const what = describeFailure(error);
    // "<what failed>; <what is in force>", then any output the failure carried (nginx's own lines).
    const newline = what.indexOf("\n");
    const head = newline < 0 ? what : what.slice(0, newline);
    const output = newline < 0 ? "" : what.slice(newline);
    const fail = (routingInForce: "previous" | "new" | "unknown", message: string) => new NodropError(code, `${head}; ${message}${output ? `:${output}` : ""}`, { cause: error, routingInForce });
    if (stage === "before") return fail("previous", `nothing was changed on ${executor.host}: the previous routing is in force`);
    if (stage === "confirmed") {
      return fail("new", `nginx on ${executor.host} had confirmed the reload, so the new routing is in force (${configFile} holds it)${code === "E_PROXY_DRAIN" ? "" : "; whether the previous generation of workers has finished draining is unknown"}`);
    }
    // A signalled reload may have loaded the new text, whatever the file is put back to: on record
    // (until a later change is confirmed and drained), for a next run this one may not live to warn.
    if (stage === "signalled" && !refusedByMaster && newText !== undefined && generation !== undefined) await recordUnconfirmed(newText, generation);
    // The file may hold the new text: put the previous one back, and say restored only when that exited 0.
    let restored: Awaited<ReturnType<typeof replaceFile>> | undefined;
    let restoreError: unknown;
    try {
      restored = await replaceFile(previousText);
    } catch (e) {
      restoreError = e;
    }
    if (!restored?.ok) {
      const why = restored ? restored.why : describeFailure(restoreError);
      // Not signalled: what routes requests is still the previous config, whatever the file holds.
      // That is what the engine must know (it changes no instance then); the file is the user's to check.
      if (stage === "written") {
        return fail("previous", `putting back the previous ${configFile} failed (${why}); nginx was not reloaded, so it still routes by the previous routing, but the file may hold the new one, which the next reload would load: check ${configFile} on ${executor.host} before going on`);
      }
      return fail("unknown", `putting back the previous ${configFile} failed (${why}): the file may still hold the new routing and the reload may have been signalled, so whether nginx routes by the previous or the new routing is unknown. Check the file and nginx on ${executor.host} (nodrop status) before going on`);
    }
    if (stage === "written") return fail("previous", `the previous ${configFile} was restored and nginx was not reloaded: the previous routing is in force`);
    if (refusedByMaster) return fail("previous", `the previous ${configFile} was restored and the previous routing is in force; nginx logged`);
    // The signal may have been sent and the new generation was not confirmed: the running nginx
    // may have loaded the new file. Reload the restored one and confirm that a new generation runs.
    try {
      const before = await workers();
      const oldPids = new Set(before.map((w) => w.pid));
      const logOffset = await errorLogSize();
      const t0 = performance.now();
      const test = await run(`${nginx} -t 2>&1`);
      if (test.code !== 0) throw new Error(`nginx -t of the restored file failed:\n${lastLines(test.stdout)}`);
      const reload = await run(`${nginx} -s reload 2>&1`);
      if (reload.code !== 0) throw new Error(`nginx -s reload failed:\n${lastLines(reload.stdout)}`);
      const confirmation = await confirmReload(oldPids, logOffset, t0);
      if (confirmation.outcome !== "confirmed") {
        throw new Error(confirmation.outcome === "refused" ? `nginx logged:\n${confirmation.emerg.slice(-5).join("\n")}` : `no new worker generation within ${confirmTimeout}ms`);
      }
    } catch (e) {
      return fail(
        "unknown",
        `the previous ${configFile} was restored, but reloading nginx with it could not be confirmed (${describeFailure(e)}): nginx may still route by the new routing. Check nginx on ${executor.host} (nodrop status) before going on`,
      );
    }
    return fail("previous", `the previous ${configFile} was restored and nginx reloaded with it (a new worker generation confirmed): the previous routing is in force`);
  };

  /** Connections the given nginx workers hold to these instances (ss on the proxy host). */
  const heldConnections = async (pids: ReadonlySet<number>, targets: readonly string[]): Promise<number> => {
    if (targets.length === 0) return 0;
    const peers = new Set(targets);
    const result = await run("ss -Htnp state established 2>/dev/null || true");
    let count = 0;
    for (const line of result.stdout.split("\n")) {
      const columns = line.trim().split(/\s+/);
      const pid = /pid=(\d+)/.exec(line)?.[1];
      if (columns[3] && peers.has(columns[3]) && pid && pids.has(Number(pid))) count += 1;
    }
    return count;
  };

  /** Why the access log cannot be read on the proxy host (a link, missing, not readable): a gate would fail on it after its instances were replaced. */
  const unreadableLog = async (signal?: AbortSignal): Promise<string[]> => {
    const result = await run(trafficCommand(options.accessLog!, undefined), signal);
    if (result.code === 0) return [];
    return [`cannot read the access log ${options.accessLog} on ${executor.host}: ${result.stderr.trim().split("\n").at(-1) || `exit ${result.code}`}`];
  };

  /** What the access log holds after `cursor` (a canary's analysis), read in pieces of at most TRAFFIC_READ_BYTES. */
  const traffic = async (cursor: string | undefined, signal?: AbortSignal): Promise<TrafficWindow> => {
    const log = options.accessLog!;
    let at = cursor === undefined ? undefined : parseCursor(cursor);
    const endpoints: Record<string, TrafficCounts> = {};
    const unattributed = { requests: 0, errors: 0 };
    for (let piece = 0; piece < 8; piece++) {
      const result = await run(trafficCommand(log, at), signal);
      if (result.code !== 0) throw new NodropError("E_PROXY_SETUP", `cannot read the access log ${log} on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
      const newline = result.stdout.indexOf("\n");
      const head = /^(\d{1,20}) (\d{1,20}) (\d{1,20})$/.exec(result.stdout.slice(0, newline));
      if (!head) throw new NodropError("E_PROXY_SETUP", `cannot read the access log ${log} on ${executor.host}: unexpected output`);
      const [inode, from, length] = [head[1]!, Number(head[2]), Number(head[3])];
      if (at === undefined) return { cursor: formatCursor({ inode, offset: from }), endpoints, unattributed };
      const parsed = parseAccessLog(result.stdout.slice(newline + 1));
      for (const [where, counts] of Object.entries(parsed.endpoints)) endpoints[where] = Object.hasOwn(endpoints, where) ? addCounts(endpoints[where]!, counts) : counts;
      unattributed.requests += parsed.unattributed.requests;
      unattributed.errors += parsed.unattributed.errors;
      // A full piece without a whole line (a line longer than a piece: not nodrop's format) is
      // skipped, or the cursor would never move past it.
      const full = length >= TRAFFIC_READ_BYTES;
      at = { inode, offset: from + (full && parsed.consumed === 0 ? length : parsed.consumed) };
      // Caught up: what is left is at most a line being written.
      if (!full) break;
    }
    return { cursor: formatCursor(at!), endpoints, unattributed };
  };

  return {
    name: "nginx",
    capabilities: options.accessLog ? { ...NGINX_CAPABILITIES, traffic: true } : NGINX_CAPABILITIES,
    ...(options.accessLog ? { traffic: (cursor: string | undefined, context: ProxyContext = {}) => traffic(cursor, context.signal) } : {}),
    clock: (context = {}) => measureClockOffset(executor, { signal: context.signal }),
    switchDelay: (afterMs) => switchTiming.delayFor(afterMs),
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
      const dumpStarted = performance.now();
      // The dump of a big config (large maps, many vhosts) can pass the executor's output cap: the
      // host keeps only the lines checked below, or on failure the last ones (nginx's error).
      const dump = await run(
        `out=$(${nginx} -T 2>&1); code=$?\nif [ "$code" -ne 0 ]; then printf '%s\\n' "$out" | tail -n 20; exit "$code"; fi\nprintf '%s\\n' "$out" | grep -E '^# configuration file |proxy_pass|add_header|worker_shutdown_timeout|log_format|access_log'\nexit 0`,
        context.signal,
      );
      if (dump.code === 0) switchTiming.noteParse(performance.now() - dumpStarted);
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
      if (options.accessLog) {
        const problems = [...(dump.code === 0 ? accessLogSetupProblems(dump.stdout, options.accessLog) : []), ...(await unreadableLog(context.signal))];
        if (problems.length > 0) {
          ok = false;
          details.push(...problems);
        } else details.push(`nginx writes ${options.accessLog} in nodrop's format (a canary's gates read it)`);
      }
      if (context.instances) {
        // The routing in force must route each instance to the address the config gives it: a
        // config whose instance moved must not deploy against a file that routes elsewhere.
        try {
          const text = await readText(context.signal);
          if (text !== undefined) {
            const problems = routedAddressProblems(text, context.instances);
            if (problems.length > 0) {
              ok = false;
              details.push(
                `${configFile} does not route the instances where the config says they are:`,
                ...problems.map((p) => `  ${p}`),
                "  run `nodrop reconcile` to apply the routing in force with the config's addresses (it checks each instance is healthy there first)",
              );
            } else details.push(`${configFile} routes every instance to the config's address`);
          }
        } catch (error) {
          ok = false;
          details.push(describeFailure(error));
        }
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
      const next = queue.then(() => apply(routing, instances, context.signal, context.backgroundDrain === true, context.switchAt));
      queue = next.catch(() => undefined);
      return next;
    },
    async current(context = {}) {
      if (inDoubt !== undefined) {
        throw new NodropError("E_PROXY_RELOAD", `cannot tell which routing nginx on ${executor.host} has in force: the last change ended unconfirmed (${inDoubt})`, { routingInForce: "unknown" });
      }
      return (await readCurrent(context.signal))?.routing;
    },
    alsoInForce: (context = {}) => unconfirmedRoutings(context.signal),
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

/** Every address:port of the fleet: each instance's port and, with slots, both of them. */
function fleetEndpoints(instances: readonly ProxyInstance[]): string[] {
  return [...new Set(instances.flatMap((i) => [i.port, ...(i.slots ?? [])].map((port) => endpoint(i.address, port))))];
}

/**
 * Compares the include file's upstream `server` lines (each names its instance in a trailing
 * comment, as renderNginxConfig writes them) with the config's instances. Problems: an id routed
 * to another address:port than the config's, an id the file still routes to that the config no
 * longer has, and an id the file's routing names with no server line. An instance of the config
 * that the file neither routes to nor names is out of the pool, which is no problem.
 */
export function routedAddressProblems(text: string, instances: readonly InstanceSpec[]): string[] {
  const routed = parseServerLines(text);
  const named = new Set<string>();
  const parsed = parseRenderedConfig(text);
  if (parsed) for (const ids of Object.values(parsed.routing.pools)) for (const id of ids) named.add(id);
  const byId = new Map(instances.map((i) => [i.id, i]));
  const problems: string[] = [];
  for (const [id, seen] of routed) {
    const instance = byId.get(id);
    if (!instance) {
      if (seen.live) problems.push(`${id}: the proxy routes to ${[...seen.endpoints].join(", ")}, the config has no instance ${id}`);
      continue;
    }
    // With two slots, either of its ports is where the config says it is.
    const expected = (instance.slots ?? [instance.port]).map((port) => endpoint(instance.address, port));
    const other = [...seen.endpoints].filter((e) => !expected.includes(e));
    if (other.length > 0) problems.push(`${id}: the proxy routes to ${other.join(", ")}, the config says ${expected.join(" or ")}`);
  }
  for (const instance of instances) {
    if (!routed.has(instance.id) && named.has(instance.id)) problems.push(`${instance.id}: the routing in force names it but no server line routes to it, the config says ${endpoint(instance.address, instance.port)}`);
  }
  return problems;
}

/** id -> the address:port its server lines route to, and whether any of them is live (not `down`). */
export function parseServerLines(text: string): Map<string, { endpoints: Set<string>; live: boolean }> {
  const routed = new Map<string, { endpoints: Set<string>; live: boolean }>();
  for (const line of text.split("\n")) {
    const m = /^\s*server\s+(\S+?)((?:\s+[^;#]*)?);\s*#\s*(\S+)\s*$/.exec(line);
    if (!m) continue;
    const id = m[3]!;
    const entry = routed.get(id) ?? { endpoints: new Set<string>(), live: false };
    entry.endpoints.add(m[1]!);
    if (!/\bdown\b/.test(m[2] ?? "")) entry.live = true;
    routed.set(id, entry);
  }
  return routed;
}

function lastLines(text: string, count = 8): string {
  return text.trim().split("\n").slice(-count).join("\n");
}

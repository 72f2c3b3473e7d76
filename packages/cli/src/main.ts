import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type DeployReport, type Executor, type JournalRecord, type Routing, agreedRouting, currentOfEach, describeRouting, isProxyGroup, routingSlotProblem, NodropError, describeValue, isSafeName, lastDeploy, observeInstances, planDeploy, reachesInstance, servingInstances, toNodropError } from "@nodrop/core";
import {
  type Deployment,
  type Output,
  checkLockWait,
  checkVerifyMode,
  checkVersion,
  deploymentJournal,
  deploymentLock,
  fleetConverged,
  formatPlan,
  formatPlugins,
  formatReport,
  loadDeployment,
  lockedDeploy,
  runCanaryCommand,
  deployRelease,
  hookFailed,
  type CanaryCommand,
  canaryCommand,
  rollbackTarget,
  versionRanBefore,
  progressReporter,
  retireAndReport,
  table,
} from "@nodrop/deployment";
import type { SshExecutor } from "@nodrop/ssh";

export const USAGE = `nodrop: deploy new code to app instances behind nginx without dropping a request

usage:
  nodrop deploy   --config FILE --version V [--artifact PATH] [--strategy S] [--verify MODE] [--lock-wait DURATION] [--json]
  nodrop resume   --config FILE [--artifact PATH] [--verify MODE] [--lock-wait DURATION] [--json]  finishes a deploy that did not end (or brings proxies that route differently together)
  nodrop rollback --config FILE [--to V] [--verify MODE] [--lock-wait DURATION] [--json] back to the version before the last deploy
  nodrop promote  --config FILE [--verify MODE] [--lock-wait DURATION] [--json]  a canary paused at a manual gate goes on
  nodrop abort    --config FILE [--verify MODE] [--lock-wait DURATION] [--json]  a canary that did not finish goes back: every client at once
  nodrop lock status|release --config FILE
  nodrop reconcile --config FILE [--dry-run] [--lock-wait DURATION] [--json]  the routing in force, with the config's addresses
  nodrop plan   --config FILE --version V [--artifact PATH] [--strategy S] [--json]   prints the steps; touches nothing
  nodrop status --config FILE [--json]                              versions, health and pool membership
  nodrop init   --config FILE                                       writes the proxy file nodrop owns, once
  nodrop --version | --help

deploy exits 0 only when every instance runs V and is in the pool.
--verify (with a verify section in the config): enforce (default; rollback: report) stops the deploy at
the probe's thresholds, report only counts, off does not probe.
--artifact (with a release section): the file or directory every host gets as the release of V,
instead of release.artifact; a rollback uses the release already on each host.`;

export interface Io {
  stdout: Output;
  stderr: Output;
  signal?: AbortSignal;
}

const VERSION: string = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version;

/** Runs the CLI and returns the exit code. */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (error) {
    const e = toNodropError(error, "E_ARGS");
    io.stderr.write(`nodrop: error [${e.code}]: ${e.message}\n`);
    return e.code === "E_ARGS" || e.code === "E_CONFIG" ? 2 : 1;
  }
}

async function dispatch(argv: readonly string[], io: Io): Promise<number> {
  // `--version` alone prints nodrop's version; with a command it is the version to deploy.
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
    io.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string", short: "c" },
      version: { type: "string" },
      strategy: { type: "string", short: "s" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
      "lock-wait": { type: "string" },
      to: { type: "string" },
      verify: { type: "string" },
      "dry-run": { type: "boolean" },
      artifact: { type: "string" },
    },
  });
  const command = positionals[0];
  if (values.help || command === "help") {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (command === undefined) throw new NodropError("E_ARGS", `a command is required\n${USAGE}`);
  const sub = command === "lock" ? positionals[1] : undefined;
  if (command === "lock" && sub !== "status" && sub !== "release") throw new NodropError("E_ARGS", "nodrop lock needs status or release");
  if (positionals.length > (command === "lock" ? 2 : 1)) throw new NodropError("E_ARGS", `unexpected argument "${positionals.at(-1)}"`);
  if (!["deploy", "plan", "status", "init", "resume", "rollback", "promote", "abort", "lock", "reconcile"].includes(command)) throw new NodropError("E_ARGS", `unknown command "${command}"\n${USAGE}`);
  const lockWait = checkLockWait(values["lock-wait"]);
  // Checked before anything is read or reached, like every other argument.
  const rollbackTo = values.to === undefined ? undefined : checkVersion(values.to, "--to");
  if (!values.config) throw new NodropError("E_ARGS", "--config is required (the nodrop YAML file)");
  const verifyMode = checkVerifyMode(values.verify);
  if (values.artifact !== undefined && !["deploy", "resume", "plan"].includes(command)) {
    throw new NodropError("E_ARGS", `--artifact is for deploy, resume and plan${command === "rollback" || command === "abort" ? `: ${command === "abort" ? "an abort" : "a rollback"} uses the release already on each host` : ""}`);
  }
  // A rollback goes back with the drain rules, one batch at a time (version pins of the newer
  // version are dropped), and repairs a site that may be failing right now: its probe counts but
  // does not stop it.
  const rollback = command === "rollback";
  const abort = command === "abort";
  const deployment = await loadDeployment(values.config, {
    strategy: rollback || abort ? undefined : values.strategy,
    rollback,
    abort,
    verify: verifyMode ?? (rollback || abort ? "report" : "enforce"),
    version: VERSION,
    log: (message) => io.stderr.write(`nodrop: ${message}\n`),
  });
  const { config } = deployment;
  try {
    switch (command) {
      case "plan": {
        const version = checkVersion(values.version);
        const { release, dispose } = await deployRelease(deployment, { mode: "deploy", override: values.artifact });
        const { plan, observed } = await planDeploy({ ...deployment.options, version, signal: io.signal, ...(release ? { release } : {}) }).finally(dispose);
        const plugins = deployment.plugins.map(({ kind, specifier, source, file, version: v, plugin }) => ({ kind, specifier, name: plugin.name, source, file, version: v }));
        io.stdout.write(values.json ? `${JSON.stringify({ plan, observed, plugins }, null, 2)}\n` : `${formatPlan(plan, observed)}\nplugins:\n  ${formatPlugins(deployment.plugins).split("\n").join("\n  ")}\n`);
        return 0;
      }
      case "deploy":
      case "resume":
      case "promote":
      case "abort":
      case "rollback": {
        const journal = deploymentJournal(deployment);
        // Read once (over SSH, it is a round trip); the deploy reads it again under the lock.
        const records = command === "deploy" ? [] : await journal.read();
        let version: string;
        let canary: CanaryCommand | undefined;
        if (command === "deploy") version = checkVersion(values.version);
        else {
          const last = lastDeploy(records);
          if (!last) throw new NodropError("E_JOURNAL", `no deploy in the journal on ${deployment.proxyExecutor.host} (${deployment.stateDir}): nothing to ${command}`);
          if (command === "promote" || command === "abort") {
            canary = canaryCommand(records, command);
            version = canary.version;
            io.stderr.write(`nodrop: ${canary.message}\n`);
          } else if (command === "resume") {
            // A finished deploy leaves nothing to resume, unless the proxies have come to route differently since.
            if (last.finished && last.ok && !(await proxiesDisagree(deployment))) throw new NodropError("E_JOURNAL", `the last deploy (${last.version} at ${last.at}) finished; nothing to resume`);
            // Checked again where it is used: the journal is a file anyone on the proxy host can edit.
            version = journalVersion(last.version, "version");
            io.stderr.write(`nodrop: resuming the deploy of ${version} started ${last.at} (last step: ${last.lastStep ?? "none"})\n`);
          } else {
            if (rollbackTo !== undefined) version = rollbackTo;
            else {
              const previous = rollbackTarget(records);
              if (!previous) throw new NodropError("E_JOURNAL", "the journal does not say which version ran before; name it with --to");
              version = journalVersion(previous, "previous version");
            }
            io.stderr.write(`nodrop: rolling back from ${last.version} to ${version}\n`);
          }
        }
        // A rollback, and the resume of one, go back to a release already on the hosts: nothing is sent.
        const goesBack = rollback || abort || ((command === "resume" || command === "promote") && versionRanBefore(records, version));
        const { release, dispose } = await deployRelease(deployment, { mode: goesBack ? "existing" : "deploy", override: values.artifact });
        const run = { lockWaitMs: lockWait, signal: io.signal, onEvent: progressReporter(values.json ? io.stderr : io.stdout), release };
        const report = await (canary
          ? runCanaryCommand(deployment, canary, run)
          : lockedDeploy(deployment, {
              ...run,
              version,
              // Resume and rollback are how a fleet whose proxies a dead deploy left routing differently comes back together.
              ...(command === "deploy" ? {} : { reconcileProxies: true }),
              command: command as "deploy" | "resume" | "rollback",
            })
        ).finally(dispose);
        const ssh = sshConnections(deployment.executors);
        if (values.json) io.stdout.write(`${JSON.stringify(ssh ? { ...report, ssh } : report, null, 2)}\n`);
        else io.stdout.write(`\n${formatReport(report)}${ssh ? `\nssh: ${ssh.connections} connections to ${ssh.hosts} hosts` : ""}\n`);
        if (report.error) io.stderr.write(`nodrop: error [${report.error.code}]: ${report.error.message}\n`);
        if (report.paused) {
          io.stderr.write(`nodrop: paused at gate ${report.paused.gate} (${report.paused.phase}): \`nodrop promote\` goes on, \`nodrop abort\` sends every client back\n`);
          return 0;
        }
        if (report.ok && report.keptUntil) await waitOutKeepWindow(deployment, report, io);
        // A postDeploy hook that failed leaves the fleet deployed, and still fails the command.
        return fleetConverged(report) && !hookFailed(report) ? 0 : 1;
      }
      case "lock": {
        const lock = deploymentLock(deployment);
        if (sub === "release") {
          const was = await lock.forceRelease();
          io.stdout.write(was ? `released the lock held by ${was.who}@${was.from} (deploying ${was.version} since ${was.since})\n` : "no lock was held\n");
          return 0;
        }
        const holder = await lock.status();
        if (values.json) io.stdout.write(`${JSON.stringify({ held: holder !== undefined, stale: holder ? lock.isStale(holder) : false, holder }, null, 2)}\n`);
        else io.stdout.write(holder ? `held by ${holder.who}@${holder.from} (pid ${holder.pid}) deploying ${holder.version} since ${holder.since}, last heartbeat ${holder.heartbeat}${lock.isStale(holder) ? " (stale: its holder stopped beating)" : ""}\n` : "not held\n");
        return 0;
      }
      case "status": {
        const journal = deploymentJournal(deployment);
        const last = lastDeploy(await journal.read());
        const lockHolder = await deploymentLock(deployment).status();
        const check = await deployment.proxy.check({ signal: io.signal });
        // Several proxies: each one's routing, and whether they agree (a deploy stopped between them).
        const proxies = isProxyGroup(deployment.proxy) ? await currentOfEach(deployment.proxy.members, { signal: io.signal }) : undefined;
        let disagreement: string | undefined;
        let routing: Routing | undefined;
        try {
          routing = proxies ? agreedRouting(proxies) : await deployment.proxy.current({ signal: io.signal });
        } catch (error) {
          if (!proxies || !NodropError.is(error)) throw error;
          disagreement = error.message;
        }
        // In the pool: reachable by a request, as preflight counts it. A pin the unfinished deploy
        // staged leads only to instances already on its version (nobody else can hold it).
        const staged = last && !last.finished && isSafeName(last.version) ? [last.version] : [];
        // With the routing, an instance with two slots is probed on the one it is served on; only
        // once its slots are the config's ports (the file is anyone's to edit on the proxy host).
        const slotProblem = routing ? routingSlotProblem(routing, deployment.options.instances.map((i) => i.spec)) : undefined;
        if (slotProblem) io.stderr.write(`nodrop: warning: ${slotProblem}; probing each instance on its first port\n`);
        const trusted = routing && !slotProblem ? { routing: { routing, staged } } : {};
        const observed = await observeInstances(deployment.options.instances, deployment.options.health, { signal: io.signal, ...trusted });
        const instances = observed.map((i) => ({ ...i, inPool: routing ? reachesInstance(routing, staged, i.id, i.version) : undefined }));
        // A change written but whose reload was never confirmed: nginx may still route by the routing before it.
        const unconfirmed = routing ? ((await deployment.proxy.alsoInForce?.({ signal: io.signal })) ?? []) : [];
        if (values.json) {
          io.stdout.write(`${JSON.stringify({ proxy: check, routing, ...(unconfirmed.length > 0 ? { unconfirmed } : {}), ...(proxies ? { proxies: proxies.map((p) => ({ host: p.label, routing: p.routing ?? null, ...(p.error ? { error: p.error } : {}) })), disagree: disagreement !== undefined } : {}), instances, lastDeploy: last, lock: lockHolder ?? null }, null, 2)}\n`);
        } else {
          if (last) {
            io.stdout.write(
              last.finished
                ? `last deploy: ${last.version} (${last.strategy}) at ${last.at}: ${last.ok ? "finished" : "failed"}\n`
                : last.paused
                  ? `last deploy: ${last.version} (${last.strategy}) at ${last.at} PAUSED at its gate in ${last.paused}. Run \`nodrop promote\` to go on or \`nodrop abort\` to send every client back.\n`
                  : `last deploy: ${last.version} (${last.strategy}) at ${last.at} DID NOT FINISH; last step: ${last.lastStep ?? "none"}. Run \`nodrop resume\` or \`nodrop rollback\`.\n`,
            );
            // A canary's gates, with what each saw (the journal's lines, plain text only).
            for (const gate of last.gates) io.stdout.write(`  gate ${gate.phase}: ${gate.status === "ok" ? "passed" : gate.status === "fail" ? "FAILED" : gate.status}${gate.detail ? `: ${gate.detail}` : ""}\n`);
          }
          if (lockHolder) io.stdout.write(`lock: held by ${lockHolder.who}@${lockHolder.from} deploying ${lockHolder.version} since ${lockHolder.since}\n`);
          const slotted = instances.some((i) => i.idle);
          const rows = instances.map((i) => [
            i.id,
            `${i.address}:${i.livePort ?? i.port}`,
            i.version ?? "?",
            i.healthy ? "healthy" : "unhealthy",
            i.inPool === undefined ? "?" : i.inPool ? "yes" : "no",
            ...(slotted ? [i.idle ? `live ${i.livePort}, idle ${i.idle.port}` : "one port"] : []),
          ]);
          io.stdout.write(`${table([["instance", "address", "version", "health", "in pool", ...(slotted ? ["slots"] : [])], ...rows]).join("\n")}\n`);
          io.stdout.write(`proxy ${deployment.proxy.name}: ${check.ok ? "ready" : "NOT READY"}\n  ${check.details.join("\n  ")}\n`);
          if (proxies) {
            io.stdout.write(`proxies: ${proxies.length}, ${disagreement ? "ROUTING DIFFERENTLY" : "all on the same routing"}\n`);
            for (const p of proxies) io.stdout.write(`  ${p.label}: ${p.error ? `cannot read its routing: ${p.error}` : p.routing ? describeRouting(p.routing) : "no routing of nodrop's"}\n`);
            if (disagreement) io.stdout.write(`  ${disagreement}\n`);
          }
          for (const r of unconfirmed) io.stdout.write(`proxy: A CHANGE WAS WRITTEN BUT ITS RELOAD NEVER CONFIRMED; it may still route by ${describeRouting(r)} (the next deploy, resume or rollback puts the file's routing into effect first)\n`);
        }
        return check.ok && !disagreement && unconfirmed.length === 0 && instances.every((i) => i.healthy) && (!last || last.finished) ? 0 : 1;
      }
      case "reconcile":
        return await reconcile(deployment, { lockWaitMs: lockWait, dryRun: values["dry-run"] === true, json: values.json === true }, io);
      case "init": {
        if (!deployment.proxy.initialize) throw new NodropError("E_PROXY_SETUP", `proxy ${deployment.proxy.name} needs no initial file`);
        // The instances as the engine knows them (with both slots): the file matches what deploys write.
        const result = await deployment.proxy.initialize(deployment.steadyRouting, deployment.options.instances.map((i) => i.spec), { signal: io.signal });
        io.stdout.write(
          `${result.wrote ? `wrote ${result.file} (${config.instances.length} instances, routing of the ${deployment.options.strategy.name} strategy at rest)` : `${result.file} exists; left as it is`}\n` +
            `one-time setup:\n  ${result.instructions.join("\n  ")}\n`,
        );
        return 0;
      }
    }
    return 2;
  } finally {
    await deployment.dispose();
  }
}

/**
 * `nodrop reconcile`: the proxy routes some instance to another address than the config gives it
 * (preflight refuses to deploy then). Under the deploy lock: reads the routing in force, shows
 * the difference the proxy's check found, probes every instance that routing serves at the
 * config's address (refusing when one is not healthy there), and applies the same routing with
 * the config's addresses. Pool membership does not change; only where each member is reached.
 */
async function reconcile(deployment: Deployment, options: { lockWaitMs: number; dryRun: boolean; json: boolean }, io: Io): Promise<number> {
  const { proxy } = deployment;
  const out = (line: string) => {
    if (!options.json) io.stdout.write(`${line}\n`);
  };
  const held = await deploymentLock(deployment).acquire("reconcile", options.lockWaitMs, io.signal);
  const signal = io.signal ? AbortSignal.any([io.signal, held.lost]) : held.lost;
  try {
    const routing = await proxy.current({ signal });
    if (!routing) throw new NodropError("E_PROXY_SETUP", `proxy ${proxy.name} has no routing written by nodrop to reconcile (run \`nodrop init\` first)`);
    const specs = deployment.options.instances.map((i) => i.spec);
    const check = await proxy.check({ signal, instances: specs });
    const served = [...servingInstances(routing)];
    out(`routing in force: ${served.join(", ") || "(no instance)"} in the pool`);
    out(`proxy ${proxy.name}: ${check.ok ? "ready" : "NOT READY"}\n  ${check.details.join("\n  ")}`);
    const known = new Set(specs.map((s) => s.id));
    const unknown = served.filter((id) => !known.has(id));
    if (unknown.length > 0) {
      throw new NodropError("E_PREFLIGHT", `the routing in force serves ${unknown.join(", ")}, which the config does not have: add ${unknown.length === 1 ? "it" : "them"} back to the config (at the address it runs on), or deploy the pool without ${unknown.length === 1 ? "it" : "them"} first; nothing was changed`);
    }
    // Every instance the routing serves must answer, healthy, at the address the config gives it:
    // reconciling moves traffic there.
    // With two slots, each instance is probed on the slot the routing in force serves.
    const observed = await observeInstances(deployment.options.instances, deployment.options.health, { signal, routing: { routing, staged: [] } });
    const byId = new Map(observed.map((o) => [o.id, o]));
    const unhealthy = served.filter((id) => !byId.get(id)?.healthy);
    for (const id of served) {
      const o = byId.get(id)!;
      out(`  ${id} at ${o.address}:${o.livePort ?? o.port} (the config's address): ${o.healthy ? `healthy, ${o.version ?? "version unknown"}` : "NOT healthy"}`);
    }
    if (unhealthy.length > 0) {
      throw new NodropError(
        "E_HEALTHCHECK",
        `refusing to reconcile: ${unhealthy.join(", ")} ${unhealthy.length === 1 ? "is" : "are"} not healthy at the config's address, and the routing in force serves ${unhealthy.length === 1 ? "it" : "them"}; fix the config's address or start ${unhealthy.length === 1 ? "it" : "them"} there; nothing was changed`,
      );
    }
    const instances = observed.map(({ id, host, address, port, slots, livePort, version }) => ({ id, host, address, port: livePort ?? port, ...(slots ? { slots } : {}), version }));
    if (options.dryRun) {
      out("dry run: would apply the routing in force with the config's addresses; nothing was changed");
      if (options.json) io.stdout.write(`${JSON.stringify({ routing, check, observed, applied: false }, null, 2)}\n`);
      return 0;
    }
    const result = await proxy.apply(routing, instances, { signal });
    const after = await proxy.check({ signal, instances: specs });
    out(`applied the routing in force with the config's addresses (generation ${result.generation}, confirmed in ${Math.round(result.confirmMs)}ms, drained in ${Math.round(result.drainMs)}ms)`);
    out(`proxy ${proxy.name}: ${after.ok ? "ready" : "NOT READY"}\n  ${after.details.join("\n  ")}`);
    if (options.json) io.stdout.write(`${JSON.stringify({ routing, check, observed, applied: true, result, after }, null, 2)}\n`);
    return after.ok ? 0 : 1;
  } finally {
    await held.release().catch((error: unknown) => io.stderr.write(`nodrop: warning: the deploy lock could not be released (${error instanceof Error ? error.message : String(error)}); \`nodrop lock status\` shows its state\n`));
  }
}

/**
 * With `keepOld`: the deploy's old processes stay up until `keptUntil` for an instant `nodrop
 * rollback` (from this or any other machine); then this process stops them, unless a later deploy
 * came first. Interrupted, it leaves them to the next deploy, which stops them before anything else.
 */
/** Whether the deployment's proxies are several and route differently now (each read for itself). */
async function proxiesDisagree(deployment: Deployment): Promise<boolean> {
  if (!isProxyGroup(deployment.proxy)) return false;
  try {
    agreedRouting(await currentOfEach(deployment.proxy.members));
    return false;
  } catch (error) {
    return NodropError.is(error) && error.code === "E_PROXY_DISAGREE";
  }
}

async function waitOutKeepWindow(deployment: Deployment, report: DeployReport, io: Io): Promise<void> {
  io.stderr.write(`nodrop: the old processes stay up until ${report.keptUntil} for \`nodrop rollback\` (one reload, nothing started); waiting to stop them then (Ctrl-C leaves them to the next deploy)\n`);
  await retireAndReport(deployment, report, io.signal, (level, text) => io.stderr.write(`nodrop: ${level === "warning" ? "warning: " : ""}${text}\n`));
}

/** SSH connections the deploy opened, for the report (one per host touched is the goal). */
function sshConnections(executors: ReadonlyMap<string, Executor>): { connections: number; hosts: number } | undefined {
  let connections = 0;
  let hosts = 0;
  for (const executor of executors.values()) {
    const count = (executor as Partial<SshExecutor>).connectionsOpened?.();
    if (count === undefined) continue;
    connections += count;
    if (count > 0) hosts += 1;
  }
  return hosts > 0 ? { connections, hosts } : undefined;
}

/** A version read back from the journal, checked at the point of use. */
function journalVersion(value: unknown, what: string): string {
  if (!isSafeName(value)) throw new NodropError("E_JOURNAL", `the journal's ${what} ${describeValue(value)} is not a safe version string; refusing to use it (name one with --to, or fix the journal)`);
  return value;
}

import * as core from "@actions/core";
import { type DeployEvent, type DeployReport, NodropError, formatBytes, formatDuration, inertLine, planDeploy, toNodropError } from "@nodrop/core";
import {
  PhaseTracker,
  checkLockWait,
  checkVerifyMode,
  checkVersion,
  deployRelease,
  fleetConverged,
  formatPlan,
  formatPlugins,
  hookFailed,
  loadDeployment,
  lockedDeploy,
  canaryCommand,
  runCanaryCommand,
  deploymentJournal,
  retireAndReport,
} from "@nodrop/deployment";
import { actionsExecExecutor } from "./exec-executor.js";
import { readInputs } from "./inputs.js";
import { writeSummary } from "./summary.js";

const KEY_ENV = "NODROP_ACTION_SSH_KEY";
const PASSPHRASE_ENV = "NODROP_ACTION_SSH_PASSPHRASE";

/**
 * The action: read the inputs, deploy (or plan), and report through outputs, log groups, an
 * annotation and the step summary. SIGINT/SIGTERM from the runner abort the deploy; the engine
 * then finishes or undoes the current proxy change and restores a healthy pool.
 */
export async function run(signal: AbortSignal): Promise<void> {
  try {
    const inputs = readInputs();
    const command = checkCommand(inputs.command);
    // promote and abort take their version from the journal, once the deployment is loaded.
    let version = command === "deploy" ? checkVersion(inputs.version, "version") : "";
    const env = { ...process.env, [KEY_ENV]: inputs.sshPrivateKey, [PASSPHRASE_ENV]: inputs.sshPassphrase };
    const verify = checkVerifyMode(inputs.verify, "verify");
    const lockWaitMs = checkLockWait(inputs.lockWait, "lock-wait");
    // Plugins the config names are resolved from its directory: the workspace, after `npm ci`.
    const deployment = await loadDeployment(inputs.config, {
      strategy: command === "deploy" ? inputs.strategy : undefined,
      abort: command === "abort",
      verify,
      env,
      log: (message) => core.info(message),
      // Action inputs become the defaults of every host; a host's own settings still win.
      sshOverrides: {
        ...(inputs.sshPrivateKey ? { privateKeyEnv: KEY_ENV } : {}),
        ...(inputs.sshPassphrase ? { passphraseEnv: PASSPHRASE_ENV } : {}),
        ...(inputs.knownHosts ? { knownHosts: inputs.knownHosts } : {}),
      },
      // Commands on the runner go through @actions/exec, so the log shows each as other actions' do.
      localExecutor: actionsExecExecutor,
    });
    try {
      core.info(`plugins:\n  ${formatPlugins(deployment.plugins).split("\n").join("\n  ")}`);
      const canary = command === "deploy" ? undefined : canaryCommand(await deploymentJournal(deployment).read(), command);
      if (canary) {
        version = canary.version;
        core.info(`nodrop: ${canary.message}`);
      }
      // The artifact input is relative to the workspace (the step's working directory); promote and abort use the release already on the hosts.
      const { release, dispose } = await deployRelease(deployment, { mode: command === "deploy" ? "deploy" : "existing", override: command === "deploy" ? inputs.artifact : undefined, overrideName: "the artifact input" });
      if (inputs.dryRun) {
        // A promote's plan is the one it would run: without the gates it passed and the one it lets through.
        const passedGates = canary?.passedGates.length ? { passedGates: canary.passedGates } : {};
        const { plan, observed } = await planDeploy({ ...deployment.options, version, signal, ...passedGates, ...(release ? { release } : {}) }).finally(dispose);
        core.info(formatPlan(plan, observed));
        setOutput("version", version);
        setOutput("result", JSON.stringify({ dryRun: true, plan }));
        return;
      }
      // The post step warns of an unfinished deploy only once something was changed: the engine's
      // first step (a proxy change or an instance command) is announced before it runs. A refused
      // lock or a failed preflight changed nothing.
      let changing = false;
      const log = logEvents();
      const onEvent = (event: DeployEvent) => {
        if (!changing && event.type === "step") {
          changing = true;
          saveState("deploying", version);
        }
        log(event);
      };
      // The same lock and journal as the CLI: a terminal deploy waits for (or is refused by) this one,
      // and `nodrop status` / `resume` see it.
      const run = { lockWaitMs, signal, onEvent, release };
      const report = await (canary ? runCanaryCommand(deployment, canary, run) : lockedDeploy(deployment, { ...run, version })).finally(dispose);
      if (report.paused) {
        // Paused on purpose: the step succeeds, and says how to go on.
        if (changing) saveState("deploying", "");
        publish(report);
        // The phase's name comes from the strategy, a plugin: an output gets it as one inert line.
        const phase = inertLine(report.paused.phase, 100);
        setOutput("paused", phase);
        core.notice(`paused at gate ${inertLine(report.paused.gate, 40)} (${phase}): run this action with command: promote to go on, or command: abort to send every client back`, { title: "nodrop canary paused" });
        await writeSummary(report).catch((error: unknown) => warnOnce("summary", `could not write the step summary: ${messageOf(error)}`));
        return;
      }
      // Kept for the post step while the fleet is not all on the version and in the pool.
      if (changing) saveState("deploying", fleetConverged(report) ? "" : version);
      publish(report);
      // A lock that could not be released does not change the deploy's result: it is a warning.
      for (const warning of report.warnings ?? []) core.warning(`nodrop: ${warning}`, { title: "nodrop E_LOCK" });
      await writeSummary(report).catch((error: unknown) => warnOnce("summary", `could not write the step summary: ${messageOf(error)}`));
      if (!fleetConverged(report)) {
        const e = report.error;
        core.error(e ? e.message : "not every instance runs the version in the pool", {
          title: `nodrop ${e?.code ?? "E_DEPLOY"}${e?.instance ? ` on ${e.instance}` : ""}${e?.step ? ` at ${e.step}` : ""}`,
        });
        core.setFailed(`deploy of ${version} failed${e ? `: [${e.code}] ${e.message.split("\n")[0]}` : ""}`);
      } else if (hookFailed(report)) {
        // Deployed, and a postDeploy hook failed: the fleet stays as it is, the step fails.
        core.setFailed(`deployed ${version}, but ${report.hooks!.filter((h) => !h.ok).map((h) => h.error ?? h.hook).join("; ")}`);
      }
      if (report.ok && report.keptUntil) await waitOutKeepWindow(deployment, report, signal);
    } finally {
      await deployment.dispose();
    }
  } catch (error) {
    const e = toNodropError(error, "E_ARGS");
    core.error(e.message, { title: `nodrop ${e.code}` });
    core.setFailed(`[${e.code}] ${e.message}`);
  }
}

/**
 * With `keepOld`: the step stays until the window ends, so that the old processes are stopped
 * even though the runner goes away after the job (a `nodrop rollback` from elsewhere meanwhile
 * makes this a no-op). The outputs are already set; cancelling the job leaves the processes to the
 * next deploy, which stops them first.
 */
async function waitOutKeepWindow(deployment: Parameters<typeof retireAndReport>[0], report: DeployReport, signal: AbortSignal): Promise<void> {
  core.info(`nodrop: the old processes stay up until ${report.keptUntil} for \`nodrop rollback\`; this step waits to stop them then`);
  await retireAndReport(deployment, report, signal, (level, text) => (level === "warning" ? core.warning(`nodrop: ${text}`) : core.info(`nodrop: ${text}`)));
}

// Runners other than GitHub's may offer no step summary, output or state file (or an unwritable
// one). The deploy's result decides the exit code: failing to write one of these is a warning.
const warned = new Set<string>();
function warnOnce(kind: string, message: string): void {
  if (warned.has(kind)) return;
  warned.add(kind);
  core.warning(`nodrop: ${message}`);
}
const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

function setOutput(name: string, value: string): void {
  try {
    core.setOutput(name, value);
  } catch (error) {
    warnOnce("output", `could not set the output ${name}: ${messageOf(error)}`);
  }
}

function saveState(name: string, value: string): void {
  try {
    core.saveState(name, value);
  } catch (error) {
    warnOnce("state", `could not save the state ${name} for the post step: ${messageOf(error)}`);
  }
}

function publish(report: DeployReport): void {
  setOutput("result", JSON.stringify(report));
  setOutput("version", report.version);
  setOutput(
    "instances",
    JSON.stringify(report.instances.map((i) => ({ id: i.id, host: i.host, port: i.port, from: i.from, version: i.version, inPool: i.inPool, outcome: i.outcome }))),
  );
  if (report.verify) {
    const { requests, failed, regressions } = report.verify;
    setOutput("verify", JSON.stringify({ requests, failed, regressions, breach: report.verify.breach ?? null }));
  }
}

/** One collapsible group per phase (batch), plain lines inside. */
export function logEvents(): (event: DeployEvent) => void {
  let open = false;
  const phases = new PhaseTracker();
  const close = () => {
    if (open) core.endGroup();
    open = false;
  };
  return (event) => {
    phases.see(event);
    switch (event.type) {
      case "preflight":
        core.info(`preflight: ${event.instances.map((i) => `${i.id}=${i.version ?? "?"}`).join(" ")}`);
        break;
      case "plan":
        for (const note of event.plan.notes) core.info(`plan: ${note}`);
        break;
      case "phase":
        close();
        core.startGroup(`${event.phase} (${event.index + 1}/${event.total})`);
        open = true;
        break;
      case "step":
        if (event.status !== "start") core.info(`${event.kind}${event.instance ? ` ${event.instance}` : event.host ? ` ${event.host}` : ""}: ${event.status === "ok" ? "ok" : "FAILED"} in ${formatDuration(event.ms ?? 0)}${event.detail ? ` (${event.detail.split("\n")[0]})` : ""}${phases.aside(event)}`);
        break;
      case "route":
        core.info(`nginx generation ${event.generation}: ${event.why}; confirmed in ${formatDuration(event.confirmMs)}, ${event.background ? "draining in the background" : `drained in ${formatDuration(event.drainMs)}`}`);
        for (const warning of event.warnings ?? []) core.warning(`nginx generation ${event.generation}: ${warning}`);
        break;
      case "drained":
        if (event.error) core.warning(`nginx generation ${event.generation}: the background drain failed after ${formatDuration(event.drainMs)}: ${event.error}`);
        else core.info(`nginx generation ${event.generation}: drained in ${formatDuration(event.drainMs)}`);
        break;
      case "recovery":
        close();
        core.startGroup("recovery");
        open = true;
        core.warning(`recovering after: ${event.reason.split("\n")[0]}`);
        break;
      case "upload":
        core.info(`upload to ${event.host}: ${formatBytes(event.sentBytes)} of ${formatBytes(event.totalBytes)}`);
        break;
      case "hook":
        if (event.status === "start") break;
        // Every line of the hook's output starts with its name: none can be read as a workflow command.
        core.info(`hook ${event.hook}: ${event.status === "ok" ? "ok" : "FAILED"} in ${formatDuration(event.ms ?? 0)}${event.detail ? ` (${event.detail})` : ""}`);
        for (const line of event.output ?? []) core.info(`  ${event.hook} | ${line}`);
        if (event.status === "fail") core.warning(`nodrop: ${event.detail ?? `the ${event.hook} hook failed`}`);
        break;
      case "done":
        close();
        break;
    }
  };
}

/** The command input: deploy, promote or abort, or an error naming the input. */
function checkCommand(value: string): "deploy" | "promote" | "abort" {
  if (value === "deploy" || value === "promote" || value === "abort") return value;
  throw new NodropError("E_ARGS", `command: expected deploy, promote or abort, got ${JSON.stringify(value.slice(0, 40))}`);
}

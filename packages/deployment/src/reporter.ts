import { type DeployEvent, type DeployPlan, type DeployReport, type InstanceReport, type ObservedInstance, type VerifyReport, formatBytes, formatDuration } from "@nodrop/core";

export interface Output {
  write(text: string): void;
  readonly isTTY: boolean;
}

/**
 * Progress while a deploy runs: on a terminal, one live line per instance redrawn in place;
 * elsewhere (CI logs, pipes), one plain line per event.
 */
export function progressReporter(out: Output, started = performance.now()): (event: DeployEvent) => void {
  const at = () => `[${formatDuration(performance.now() - started).padStart(6)}]`;
  if (!out.isTTY) {
    const phases = new PhaseTracker();
    return (event) => {
      phases.see(event);
      const line = plainLine(event);
      if (line) out.write(`${at()} ${line}${phases.aside(event)}\n`);
    };
  }
  const rows = new Map<string, string>();
  let drawn = 0;
  let status = "";
  const redraw = () => {
    if (drawn > 0) out.write(`\x1b[${drawn}A`);
    const lines = [...rows.entries()].map(([id, text]) => `  ${id.padEnd(14)} ${text}`);
    lines.push(status);
    out.write(lines.map((l) => `\x1b[2K${l}\n`).join(""));
    drawn = lines.length;
  };
  return (event) => {
    switch (event.type) {
      case "preflight":
        for (const i of event.instances) rows.set(i.id, `${i.version ?? "?"}  waiting`);
        break;
      case "step":
        if (event.instance) {
          const mark = event.status === "start" ? "…" : event.status === "ok" ? `✓ ${formatDuration(event.ms ?? 0)}` : "✗";
          rows.set(event.instance, `${event.phase.padEnd(16)} ${event.kind.padEnd(6)} ${mark}`);
        } else if (event.kind === "route" && event.status === "start") status = `${at()} proxy: reloading and draining…`;
        else if (event.host) status = `${at()} release on ${event.host}: ${event.status === "start" ? "…" : event.status === "ok" ? `✓ ${event.detail ?? ""}` : "✗"}`;
        break;
      case "upload":
        status = `${at()} upload to ${event.host}: ${uploadProgress(event)}`;
        break;
      case "hook":
        // Its output goes above the live rows, as plain lines: it is the hook's log.
        if (event.status !== "start") out.write(`${hookLines(event)}\n`);
        status = `${at()} hook ${event.hook}: ${event.status === "start" ? "running…" : event.status === "ok" ? "ok" : "FAILED"}`;
        break;
      case "route":
        status = `${at()} proxy gen ${event.generation}: ${event.why} (confirm ${formatDuration(event.confirmMs)}, ${event.background ? "draining in the background" : `drain ${formatDuration(event.drainMs)}`})${event.warnings?.length ? ` WARNING: ${event.warnings[0]}` : ""}`;
        break;
      case "drained":
        if (event.error) status = `${at()} proxy gen ${event.generation}: drain FAILED: ${event.error}`;
        break;
      case "recovery":
        status = `${at()} recovering: ${event.reason.split("\n")[0]}`;
        break;
      case "gate":
        status = `${at()} gate ${event.gate}: ${event.decision} (${event.reason})`;
        break;
      case "done":
        break;
      default:
        return;
    }
    if (rows.size > 0) redraw();
  };
}

/**
 * Which phase the log's lines are under. A step of a later phase that started early (surge's
 * pipeline: the next batch starts while this one swaps) says which phase it belongs to.
 */
export class PhaseTracker {
  /** The plan's phases, in order. */
  private planned: string[] = [];
  private current = -1;

  see(event: DeployEvent): void {
    if (event.type === "plan") this.planned = event.plan.phases.map((p) => p.name);
    if (event.type === "phase") this.current = event.index;
  }

  /** " (for <phase>, started early)" for a step of a phase after the one the lines are under (not an earlier one's background stop). */
  aside(event: DeployEvent): string {
    return event.type === "step" && this.planned.indexOf(event.phase) > this.current ? ` (for ${event.phase}, started early)` : "";
  }
}

function plainLine(event: DeployEvent): string | undefined {
  switch (event.type) {
    case "preflight":
      return `preflight: ${event.instances.map((i) => `${i.id}=${i.version ?? "?"}`).join(" ")}`;
    case "plan":
      return `plan: ${event.plan.phases.length} phases${event.plan.notes.length ? `; ${event.plan.notes.join("; ")}` : ""}`;
    case "phase":
      return `${event.phase}`;
    case "step":
      if (event.status === "start") return undefined;
      if (event.status === "paused") return `  ${event.kind} PAUSED${event.detail ? `: ${event.detail.split("\n")[0]}` : ""}`;
      return `  ${event.kind}${event.instance ? ` ${event.instance}` : event.host ? ` ${event.host}` : ""} ${event.status === "ok" ? "ok" : "FAILED"} ${formatDuration(event.ms ?? 0)}${event.detail ? `: ${event.detail.split("\n")[0]}` : ""}`;
    case "route":
      return [
        `  proxy generation ${event.generation}: ${event.why} (confirmed in ${formatDuration(event.confirmMs)}, ${event.background ? "draining in the background" : `drained in ${formatDuration(event.drainMs)}`})`,
        ...(event.warnings ?? []).map((w) => `  warning: ${w}`),
      ].join("\n");
    case "drained":
      return `  proxy generation ${event.generation} ${event.error ? `drain FAILED after ${formatDuration(event.drainMs)}: ${event.error}` : `drained in ${formatDuration(event.drainMs)}`} (${event.why})`;
    case "recovery":
      return `recovery after: ${event.reason.split("\n")[0]}`;
    case "upload":
      return `  upload to ${event.host}: ${uploadProgress(event)}`;
    case "hook":
      return event.status === "start" ? undefined : hookLines(event);
    case "gate":
      // The gate's step line says what it decided, with the figures.
      return undefined;
    case "done":
      return undefined;
  }
}

/** A hook's end and its output, each line marked as the hook's (the lines are inert already). */
function hookLines(event: Extract<DeployEvent, { type: "hook" }>): string {
  const head = `hook ${event.hook} ${event.status === "ok" ? "ok" : "FAILED"} ${formatDuration(event.ms ?? 0)}${event.detail ? `: ${event.detail}` : ""}`;
  return [head, ...(event.output ?? []).map((line) => `  ${event.hook} | ${line}`)].join("\n");
}

function uploadProgress(event: { sentBytes: number; totalBytes: number }): string {
  const percent = event.totalBytes > 0 ? Math.floor((event.sentBytes / event.totalBytes) * 100) : 100;
  return `${formatBytes(event.sentBytes)} of ${formatBytes(event.totalBytes)} (${percent}%)`;
}

export function formatPlan(plan: DeployPlan, observed: readonly ObservedInstance[]): string {
  const lines = [`strategy ${plan.strategy}, deploying ${plan.version}`];
  lines.push("instances now:");
  for (const i of observed) lines.push(`  ${i.id.padEnd(14)} ${i.address}:${i.port}  ${i.version ?? "?"}${i.healthy ? "" : "  (unhealthy)"}`);
  for (const note of plan.notes) lines.push(`note: ${note}`);
  plan.phases.forEach((phase, index) => {
    lines.push(`${index + 1}. ${phase.name}${phase.instances.length ? ` [${phase.instances.join(", ")}]` : ""}`);
    for (const step of phase.steps) {
      if (step.kind === "route") {
        const pools = Object.entries(step.routing.pools).map(([name, ids]) => `${name}={${ids.join(",")}}`).join(" ");
        const pins = Object.entries(step.routing.pins).map(([v, p]) => `${v}->${p}`).join(" ");
        const split = step.routing.split ? `; ${step.routing.split.percent}% of clients to ${step.routing.split.to}` : "";
        lines.push(`   - proxy: ${step.why} (${pools}; default ${step.routing.defaultPool}${split}${pins ? `; pins ${pins}` : ""}); wait for the old generation to drain`);
      } else if (step.kind === "soak") lines.push(`   - soak ${formatDuration(step.ms)}`);
      else if (step.kind === "gate") lines.push(`   - gate ${step.name}: ${step.analysis ? "compare the new version's 5xx rate and p99 with the old one's" : "wait"} for ${formatDuration(step.ms)}`);
      else if (step.kind === "release") lines.push(`   - release on ${step.hosts.join(", ")}, side by side (see the release note)`);
      else lines.push(`   - ${step.kind} ${step.instances.join(", ")}`);
    }
  });
  if (plan.phases.length === 0) lines.push("nothing to do");
  return lines.join("\n");
}

/** Whether every instance runs the version and is in the pool: the only success `deploy` reports. */
export function fleetConverged(report: DeployReport): boolean {
  return report.ok && report.instances.every((i) => i.version === report.version && i.inPool);
}

/** Whether a hook failed (a postDeploy after a deploy that succeeded, an onFailure): the CLI and the action then exit 1. */
export function hookFailed(report: DeployReport): boolean {
  return (report.hooks ?? []).some((h) => !h.ok);
}

export function formatReport(report: DeployReport): string {
  const lines: string[] = [];
  const state = fleetConverged(report) ? "DEPLOYED" : "FAILED";
  lines.push(`${state}: ${report.version} with ${report.strategy} in ${formatDuration(report.durationMs)}`);
  if (report.error) {
    lines.push(`error [${report.error.code}]${report.error.step ? ` at ${report.error.step}` : ""}${report.error.instance ? ` (instance ${report.error.instance})` : ""}:`);
    lines.push(`  ${report.error.message.split("\n").join("\n  ")}`);
  }
  if (report.recovery) lines.push(`recovery: ${report.recovery}`);
  lines.push("");
  const header = ["instance", "address", "before", "now", "in pool", "outcome", "stop", "update", "start", "check"];
  const rows = report.instances.map((i) => [
    i.id,
    `${i.address}:${i.port}`,
    i.from ?? "?",
    i.version ?? "?",
    i.inPool ? "yes" : "no",
    i.outcome,
    ...(["stop", "update", "start", "check"] as const).map((k) => stepTime(i, k)),
  ]);
  lines.push(...table([header, ...rows]));
  if (report.routes.length > 0) {
    const drain = report.routes.reduce((s, r) => s + r.drainMs, 0);
    const confirm = report.routes.reduce((s, r) => s + r.confirmMs, 0);
    const cut = report.routes.reduce((s, r) => s + r.cut, 0);
    lines.push("", `proxy: ${report.routes.length} reloads, confirm ${formatDuration(confirm)} and drain ${formatDuration(drain)} in total`);
    if (cut > 0) lines.push(`long-lived connections cut at the drain ceiling (proxy.drainTimeout): ${cut}`);
    for (const route of report.routes) for (const warning of route.warnings ?? []) lines.push(`warning: proxy generation ${route.generation}: ${warning}`);
  }
  if (report.verify) lines.push(`verify: ${formatVerify(report.verify)}`);
  for (const h of report.hooks ?? []) if (!h.ok) lines.push(`hook ${h.hook} FAILED: ${h.error ?? `exit ${h.code}`}`);
  for (const r of report.releases ?? []) lines.push(`releases on ${r.host}: ${r.kept.join(", ") || "none"}${r.removed.length ? ` (removed ${r.removed.join(", ")})` : ""}`);
  for (const i of report.instances) if (i.error) lines.push(`${i.id}: ${i.error.split("\n")[0]}`);
  for (const warning of report.warnings ?? []) lines.push(`warning: ${warning}`);
  return lines.join("\n");
}

/** One line of the verify probe's counts, the same in the CLI report and the action summary. */
export function formatVerify(verify: VerifyReport): string {
  const versions = Object.entries(verify.byVersion).map(([v, n]) => `${v} ${n}`).join(", ");
  const errors = Object.entries(verify.errors).map(([kind, n]) => `${kind} ${n}`).join(", ");
  const limits = verify.enforced ? `allowed ${verify.maxFailed} failed${verify.maxRegressions === undefined ? "" : `, ${verify.maxRegressions} regressions`}` : "counted only";
  return (
    `${verify.requests} requests to ${verify.url} in ${formatDuration(verify.durationMs)}: ${verify.failed} failed${errors ? ` (${errors})` : ""}, ` +
    `${verify.regressions} version regressions, ${verify.resent} resent on a closed keep-alive connection; answered by ${versions || "none"} (${limits})${verify.breach ? " — THRESHOLD CROSSED" : ""}`
  );
}

function stepTime(instance: InstanceReport, kind: string): string {
  const steps = instance.steps.filter((s) => s.kind === kind);
  if (steps.length === 0) return "-";
  return steps.map((s) => `${formatDuration(s.ms)}${s.ok ? "" : "!"}`).join("+");
}

export function table(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? "").length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c]!)).join("  ").trimEnd());
}

/** One line per plugin the config named: what each name resolved to, from which file, at which version. */
export function formatPlugins(plugins: readonly { kind: string; specifier: string; plugin: { name: string }; source: string; file: string | undefined; version: string }[]): string {
  // Names, versions and paths come from the plugins' own files and the disk: no control character reaches a log.
  const show = (text: string) => (/^[\x20-\x7e\u00a0-\uffff]*$/.test(text) && !/[\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(text) ? text : JSON.stringify(text));
  return plugins
    .map((p) => `${p.kind} ${show(p.specifier)}: ${p.source === "built-in" ? `built-in ${show(p.plugin.name)} (nodrop ${show(p.version)})` : `${show(p.plugin.name)} ${show(p.version)} from ${show(p.file ?? "")}`}`)
    .join("\n");
}

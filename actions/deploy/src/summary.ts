import * as core from "@actions/core";
import { formatVerify } from "@nodrop/deployment";
import { type DeployReport, type InstanceReport, formatDuration } from "@nodrop/core";

const step = (i: InstanceReport, kind: string) => {
  const steps = i.steps.filter((s) => s.kind === kind);
  return steps.length === 0 ? "-" : steps.map((s) => `${formatDuration(s.ms)}${s.ok ? "" : " ✗"}`).join(" + ");
};

/** The step summary: one row per instance, then the totals. */
export async function writeSummary(report: DeployReport): Promise<void> {
  const header = ["instance", "host", "port", "before", "now", "stop", "update", "start", "check", "in pool", "state"].map((data) => ({ data, header: true }));
  const rows = report.instances.map((i) => [i.id, i.host, String(i.port), i.from ?? "?", i.version ?? "?", step(i, "stop"), step(i, "update"), step(i, "start"), step(i, "check"), i.inPool ? "yes" : "no", i.outcome]);
  const drain = report.routes.reduce((s, r) => s + r.drainMs, 0);
  const cut = report.routes.reduce((s, r) => s + r.cut, 0);
  core.summary
    .addHeading(`nodrop: ${report.ok ? "deployed" : "FAILED"} ${report.version} (${report.strategy})`, 2)
    .addTable([header, ...rows])
    .addList([
      `duration ${formatDuration(report.durationMs)}`,
      `${report.routes.length} nginx reloads, drains ${formatDuration(drain)} in total${cut ? `, ${cut} long-lived connections cut` : ""}`,
      `${report.instances.filter((i) => i.version === report.version && i.inPool).length} of ${report.instances.length} instances on ${report.version} and in the pool`,
      ...(report.verify ? [`verify probe: ${formatVerify(report.verify)}`] : []),
    ]);
  if (report.error) core.summary.addRaw(`\n**${report.error.code}**${report.error.step ? ` at ${report.error.step}` : ""}: ${report.error.message}\n`, true);
  if (report.recovery) core.summary.addRaw(`\nrecovery: ${report.recovery}\n`, true);
  await core.summary.write();
}

import type { DeployRun } from "./deploy-run.js";
import { toNodropError } from "./errors.js";
import type { Journal } from "./journal.js";
import type { DeployReport } from "./report.js";
import type { RunListener, StepRecord } from "./run-listener.js";
import type { DeployPlan } from "./types.js";

/**
 * Writes the deploy to the journal: a "deploy" record before the first change, every step before
 * and after it runs, and an "end" record with the report. A record that cannot be written stops
 * the deploy, except during recovery, when a full disk must not stop the fleet being restored.
 */
export class JournalListener implements RunListener {
  readonly name = "journal";
  /** Whether the deploy's first record is written: only then does it get an "end". */
  private opened = false;

  private readonly journal: Journal;
  private readonly strategy: string;

  constructor(journal: Journal, strategy: string) {
    this.journal = journal;
    this.strategy = strategy;
  }

  async started(run: DeployRun, _plan: DeployPlan): Promise<void> {
    await this.journal
      .append({ type: "deploy", id: run.id, version: run.version, strategy: this.strategy, instances: run.observed.map((o) => ({ id: o.id, from: o.version })) })
      .catch((error: unknown) => Promise.reject(toNodropError(error, "E_JOURNAL")));
    this.opened = true;
  }

  async step(run: DeployRun, record: StepRecord): Promise<void> {
    const detail = record.detail === undefined ? {} : { detail: record.detail.split("\n")[0]! };
    const append = this.journal.append({ type: "step", id: run.id, phase: record.phase, kind: record.kind, instance: record.instance, ...(record.host ? { host: record.host } : {}), status: record.status, ...detail });
    // A failure's own record is best effort: the failure is what gets reported.
    if (run.recovering || record.status === "fail") await append.catch(() => undefined);
    else await append;
  }

  async finished(run: DeployRun, report: DeployReport): Promise<void> {
    // A paused deploy stays open: `nodrop promote` resumes it, `nodrop abort` rolls it back.
    if (!this.opened || report.paused) return;
    await this.journal
      .append({
        type: "end",
        id: run.id,
        ok: report.ok,
        ...(report.error ? { error: report.error.message.split("\n")[0]! } : {}),
        ...(report.keptUntil ? { keptUntil: report.keptUntil } : {}),
        instances: report.instances.map((i) => ({
          id: i.id,
          version: i.version,
          inPool: i.inPool,
          outcome: i.outcome,
          ...(i.idle ? { port: i.port, ...(i.idle.running !== false ? { idle: i.idle.port } : {}) } : {}),
        })),
      })
      .catch(() => undefined);
  }
}

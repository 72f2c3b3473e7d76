import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { REFUSED, stateCheck, stateGuard, stateRefusal } from "./state.js";
import type { StepKind } from "./types.js";
import { describeValue, isSafeName, shellQuote } from "./template.js";

/** One line of the journal: what a deploy is about to do, and what it did. */
export type JournalEntry =
  | { readonly type: "deploy"; readonly id: string; readonly version: string; readonly strategy: string; readonly instances: readonly { id: string; from: string | undefined }[] }
  | { readonly type: "step"; readonly id: string; readonly phase: string; readonly kind: StepKind; readonly instance: string | undefined; readonly host?: string; readonly status: "start" | "ok" | "fail" | "paused"; readonly detail?: string }
  | {
      readonly type: "end";
      readonly id: string;
      readonly ok: boolean;
      readonly error?: string;
      /** Old slots kept running for an instant rollback until then (ISO time). */
      readonly keptUntil?: string;
      /** `port`: the slot it is served on, for instances with slots; `idle`: that slot's port when a process may still run there. */
      readonly instances: readonly { id: string; version: string | undefined; inPool: boolean; outcome: string; port?: number; idle?: number }[];
    };

export type JournalRecord = JournalEntry & { readonly at: string };

export interface Journal {
  /** Appends an entry; resolves once it is on the proxy host's disk. */
  append(entry: JournalEntry): Promise<void>;
  read(): Promise<JournalRecord[]>;
}

/**
 * The journal, an append-only file of JSON lines on the proxy host: every step is recorded before
 * and after it runs, so after a crash, a killed process or a lost runner the truth is still there.
 */
export function fileJournal(executor: Executor, file: string): Journal {
  const path = shellQuote(file);
  const dir = file.slice(0, Math.max(file.lastIndexOf("/"), 1)) || ".";
  // It holds command error lines: its directory and it are this uid's alone, and never a link.
  const paths = [
    { path: dir, type: "dir" },
    { path: file, type: "file" },
  ] as const;
  const guard = stateGuard(paths);
  let queue: Promise<unknown> = Promise.resolve();
  return {
    append(entry) {
      const line = `${JSON.stringify({ at: new Date().toISOString(), ...entry })}\n`;
      // Appends are serialized so the file keeps the order things happened in.
      const next = queue.then(async () => {
        if (executor.appendFile) {
          await executor.appendFile(file, line).catch((error: unknown) => {
            throw new NodropError("E_JOURNAL", `cannot write the journal ${file} on ${executor.host}: ${(error as Error).message}`, { cause: error });
          });
          return;
        }
        const result = await executor.exec(`umask 077\n${guard}[ -e ${shellQuote(dir)} ] || mkdir -p -- ${shellQuote(dir)} || exit 1\n${stateCheck(paths)}cat >> ${path}`, { input: line, timeoutMs: 30_000 });
        if (result.code === REFUSED) throw stateRefusal("E_JOURNAL", `the journal ${file}`, executor.host, result.stderr);
        if (result.code !== 0) throw new NodropError("E_JOURNAL", `cannot write the journal ${file} on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
      });
      queue = next.catch(() => undefined);
      return next;
    },
    async read() {
      // No journal is an empty one (a first deploy); one that is there but cannot be read is not:
      // read as empty, it would hide a deploy that did not finish, or a canary paused at a gate.
      const result = await executor.exec(`${guard}if [ -e ${path} ]; then cat -- ${path} || exit 1; fi`);
      if (result.code === REFUSED) throw stateRefusal("E_JOURNAL", `the journal ${file}`, executor.host, result.stderr);
      if (result.code !== 0) {
        throw new NodropError("E_JOURNAL", `cannot read the journal ${file} on ${executor.host} (${result.stderr.trim().split("\n").at(-1) || `exit ${result.code}`}): it says whether the last deploy finished, so nothing goes on without it; make it readable, or move it aside to start a new one`);
      }
      return parseJournal(result.stdout);
    },
  };
}

/** The journal's records from its text: whole JSON lines only (a line cut short by a crash is left out). */
export function parseJournal(text: string): JournalRecord[] {
  return text
    .split("\n")
    .filter((line) => line.trim().startsWith("{"))
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as JournalRecord];
      } catch {
        return [];
      }
    });
}

export interface LastDeploy {
  readonly id: string;
  readonly version: string;
  readonly strategy: string;
  readonly at: string;
  readonly finished: boolean;
  readonly ok: boolean | undefined;
  /** Versions the instances ran before it. */
  readonly from: Readonly<Record<string, string | undefined>>;
  /** The last step it recorded. */
  readonly lastStep: string | undefined;
  /** The phase of the manual gate it is paused at (its last step), when it is. */
  readonly paused?: string | undefined;
  /** Its gates' outcomes, in order: the phase, "ok", "fail" or "paused", and what the gate saw. */
  readonly gates: readonly { readonly phase: string; readonly status: string; readonly detail: string }[];
  /** The phases whose gate it passed (what a resume plans without its gate). */
  readonly passedGates: readonly string[];
}

/**
 * The most recent deploy in the journal, and whether it reached its end. The journal is a file on
 * the proxy host that anyone with access there can edit: every value read back that nodrop would
 * act on or show (versions, instance ids, the strategy, the time) is checked here, and a bad one is
 * refused with E_JOURNAL naming the field, so it never reaches a command, the proxy or a terminal.
 */
export function lastDeploy(records: readonly JournalRecord[]): LastDeploy | undefined {
  const isObject = (r: unknown): r is Record<string, unknown> => typeof r === "object" && r !== null && !Array.isArray(r);
  const starts = records.filter((r): r is Extract<JournalRecord, { type: "deploy" }> => isObject(r) && r.type === "deploy");
  const start = starts.at(-1);
  if (!start) return undefined;
  const refuse = (field: string, value: unknown, expected: string) =>
    new NodropError("E_JOURNAL", `the journal's last deploy has ${field} ${describeValue(value)}, which is not ${expected}; refusing to use it (fix or move the journal file)`);
  if (typeof start.id !== "string" || start.id.length === 0 || start.id.length > 200) throw refuse("id", start.id, "a deploy id");
  if (!isSafeName(start.version)) throw refuse("version", start.version, "a safe version string");
  if (!isSafeName(start.strategy)) throw refuse("strategy", start.strategy, "a strategy name");
  if (typeof start.at !== "string" || !/^\d{4}-\d{2}-\d{2}T[\d:.]+Z$/.test(start.at)) throw refuse("time", start.at, "an ISO time");
  if (!Array.isArray(start.instances)) throw refuse("instances", start.instances, "a list");
  const from: Record<string, string | undefined> = {};
  start.instances.forEach((entry: unknown, index) => {
    if (!isObject(entry) || !isSafeName(entry.id)) throw refuse(`instances[${index}].id`, isObject(entry) ? entry.id : entry, "an instance id");
    if (entry.from !== undefined && entry.from !== null && !isSafeName(entry.from)) throw refuse(`instances[${index}].from (${entry.id})`, entry.from, "a safe version string");
    from[entry.id] = typeof entry.from === "string" ? entry.from : undefined;
  });
  const own = records.filter((r) => isObject(r) && r.id === start.id);
  const end = own.find((r): r is Extract<JournalRecord, { type: "end" }> => r.type === "end");
  const step = own.filter((r): r is Extract<JournalRecord, { type: "step" }> => r.type === "step").at(-1);
  // Shown as it is when it is plain text, escaped otherwise.
  const text = (value: unknown) => (typeof value === "string" && /^[\x20-\x7e]{1,100}$/.test(value) ? value : describeValue(value, 40));
  const gateRecords = own.filter((r): r is Extract<JournalRecord, { type: "step" }> => r.type === "step" && r.kind === "gate" && r.status !== "start");
  // A gate's phase goes back into a plan (passedGates): only a plain phase name counts.
  const phaseName = (value: unknown): value is string => typeof value === "string" && /^[A-Za-z0-9][A-Za-z0-9 .,%:/_-]{0,99}$/.test(value);
  const gates = gateRecords.map((r) => ({ phase: text(r.phase), status: text(r.status), detail: typeof r.detail === "string" && /^[\x20-\x7e]{1,400}$/.test(r.detail) ? r.detail : r.detail === undefined ? "" : describeValue(r.detail, 40) }));
  const passedGates = [...new Set(gateRecords.filter((r) => r.status === "ok" && phaseName(r.phase)).map((r) => r.phase))];
  return {
    id: start.id,
    version: start.version,
    strategy: start.strategy,
    at: start.at,
    finished: end !== undefined,
    ok: end === undefined ? undefined : end.ok === true,
    from,
    paused: step?.kind === "gate" && step.status === "paused" && phaseName(step.phase) ? step.phase : undefined,
    gates,
    passedGates,
    lastStep: step ? `${text(step.phase)}: ${text(step.kind)}${step.instance ? ` ${isSafeName(step.instance) ? step.instance : describeValue(step.instance, 40)}` : step.host ? ` ${isSafeName(step.host) ? step.host : describeValue(step.host, 40)}` : ""} (${text(step.status)})` : undefined,
  };
}

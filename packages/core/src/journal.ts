import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import type { StepKind } from "./types.js";
import { shellQuote } from "./template.js";

/** One line of the journal: what a deploy is about to do, and what it did. */
export type JournalEntry =
  | { readonly type: "deploy"; readonly id: string; readonly version: string; readonly strategy: string; readonly instances: readonly { id: string; from: string | undefined }[] }
  | { readonly type: "step"; readonly id: string; readonly phase: string; readonly kind: StepKind; readonly instance: string | undefined; readonly status: "start" | "ok" | "fail"; readonly detail?: string }
  | { readonly type: "end"; readonly id: string; readonly ok: boolean; readonly error?: string; readonly instances: readonly { id: string; version: string | undefined; inPool: boolean; outcome: string }[] };

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
        const result = await executor.exec(`mkdir -p "$(dirname ${path})" && cat >> ${path}`, { input: line, timeoutMs: 30_000 });
        if (result.code !== 0) throw new NodropError("E_JOURNAL", `cannot write the journal ${file} on ${executor.host}: ${result.stderr.trim() || `exit ${result.code}`}`);
      });
      queue = next.catch(() => undefined);
      return next;
    },
    async read() {
      const result = await executor.exec(`cat ${path} 2>/dev/null || true`);
      return result.stdout
        .split("\n")
        .filter((line) => line.trim().startsWith("{"))
        .flatMap((line) => {
          try {
            return [JSON.parse(line) as JournalRecord];
          } catch {
            return []; // a line cut short by a crash
          }
        });
    },
  };
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
}

/** The most recent deploy in the journal, and whether it reached its end. */
export function lastDeploy(records: readonly JournalRecord[]): LastDeploy | undefined {
  const starts = records.filter((r): r is Extract<JournalRecord, { type: "deploy" }> => r.type === "deploy");
  const start = starts.at(-1);
  if (!start) return undefined;
  const own = records.filter((r) => r.id === start.id);
  const end = own.find((r): r is Extract<JournalRecord, { type: "end" }> => r.type === "end");
  const step = own.filter((r): r is Extract<JournalRecord, { type: "step" }> => r.type === "step").at(-1);
  return {
    id: start.id,
    version: start.version,
    strategy: start.strategy,
    at: start.at,
    finished: end !== undefined,
    ok: end?.ok,
    from: Object.fromEntries(start.instances.map((i) => [i.id, i.from])),
    lastStep: step ? `${step.phase}: ${step.kind}${step.instance ? ` ${step.instance}` : ""} (${step.status})` : undefined,
  };
}

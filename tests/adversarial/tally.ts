// The adversarial suite's tally: every hostile input a test tries is recorded before it runs and
// again once its assertions held (a clear refusal, or a harmless result, and nothing changed).
// global-setup.ts sums the records of every test file and prints
// `hostile inputs tried: N, refused or harmless: N` when the run ends.
import { appendFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const TALLY_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", ".nodrop", "hostile");

/** Where the hostile input comes from. */
export type HostileSource =
  | "config"
  | "cli"
  | "action-input"
  | "instance-response"
  | "known-hosts"
  | "proxy-host-file"
  | "ssh-server"
  | "journal"
  | "plugin";

function record(kind: "tried" | "held", source: HostileSource, name: string): void {
  mkdirSync(TALLY_DIR, { recursive: true });
  appendFileSync(path.join(TALLY_DIR, `${process.pid}.jsonl`), `${JSON.stringify({ kind, source, name })}\n`);
}

/**
 * Runs one hostile case: `check` must assert both the outcome (an error naming the field, host or
 * instance, or a harmless result) and that nothing changed. It counts as held only when `check`
 * resolves; a throw fails the test and the case stays "tried" only.
 */
export async function hostile<T>(source: HostileSource, name: string, check: () => T | Promise<T>): Promise<T> {
  record("tried", source, name);
  const result = await check();
  record("held", source, name);
  return result;
}

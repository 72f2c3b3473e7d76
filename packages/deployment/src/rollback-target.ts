import { type JournalRecord, lastDeploy } from "@nodrop/core";

/**
 * The version `nodrop rollback` goes back to, from the journal: what most instances ran before
 * the last deploy that changed it, skipping deploys that changed no version (the end of a keep
 * window redeploys the version that runs, to stop the old processes; so does deploying the same
 * version again).
 */
export function rollbackTarget(records: readonly JournalRecord[]): string | undefined {
  let rest = records;
  for (let last = lastDeploy(rest); last; last = lastDeploy(rest)) {
    const previous = mostCommon(Object.values(last.from));
    if (previous !== undefined && previous !== last.version) return previous;
    rest = rest.slice(0, rest.findLastIndex((r) => r.type === "deploy"));
  }
  return undefined;
}

function mostCommon(values: readonly (string | undefined)[]): string | undefined {
  const counts = new Map<string, number>();
  for (const v of values) if (v !== undefined) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
}

import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { TALLY_DIR } from "./tally.js";

/** Clears the tally at the start of a run and prints its sums at the end. */
export default function setup(): () => void {
  rmSync(TALLY_DIR, { recursive: true, force: true });
  return () => {
    if (!existsSync(TALLY_DIR)) return;
    const lines = readdirSync(TALLY_DIR).flatMap((f) => readFileSync(path.join(TALLY_DIR, f), "utf8").split("\n").filter(Boolean));
    const records = lines.map((l) => JSON.parse(l) as { kind: string; source: string });
    const tried = records.filter((r) => r.kind === "tried");
    const held = records.filter((r) => r.kind === "held");
    const bySource = new Map<string, number>();
    for (const r of tried) bySource.set(r.source, (bySource.get(r.source) ?? 0) + 1);
    const sources = [...bySource].map(([s, n]) => `${s} ${n}`).join(", ");
    console.log(`hostile inputs tried: ${tried.length}, refused or harmless: ${held.length} (${sources})`);
  };
}

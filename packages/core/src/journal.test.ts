import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { type ExecOptions, localExecutor } from "./executor.js";
import { type JournalRecord, fileJournal, lastDeploy } from "./journal.js";
import { shellQuote } from "./template.js";
import { rejected } from "./test-support.js";

const at = "2026-11-27T18:00:00.000Z";

describe("lastDeploy", () => {
  it("finds the newest deploy, whether it ended, what ran before it and its last step", () => {
    const records: JournalRecord[] = [
      { at, type: "deploy", id: "a", version: "v2", strategy: "rolling", instances: [{ id: "x", from: "v1" }] },
      { at, type: "end", id: "a", ok: true, instances: [{ id: "x", version: "v2", inPool: true, outcome: "updated" }] },
      { at, type: "deploy", id: "b", version: "v3", strategy: "half-split", instances: [{ id: "x", from: "v2" }, { id: "y", from: "v2" }] },
      { at, type: "step", id: "b", phase: "half A", kind: "route", instance: undefined, status: "ok" },
      { at, type: "step", id: "b", phase: "half A", kind: "stop", instance: "x", status: "start" },
    ];
    expect(lastDeploy(records)).toEqual({
      id: "b",
      version: "v3",
      strategy: "half-split",
      at,
      finished: false,
      ok: undefined,
      from: { x: "v2", y: "v2" },
      lastStep: "half A: stop x (start)",
      paused: undefined,
      gates: [],
      passedGates: [],
    });
    expect(lastDeploy(records.slice(0, 2))).toMatchObject({ id: "a", finished: true, ok: true });
    expect(lastDeploy([])).toBeUndefined();
  });

  it("reads a canary's gates: those passed, the one it is paused at, and refuses to plan from a forged phase name", () => {
    const records: JournalRecord[] = [
      { at, type: "deploy", id: "c", version: "v2", strategy: "canary", instances: [{ id: "x", from: "v1" }] },
      { at, type: "step", id: "c", phase: "canary 10%", kind: "gate", instance: undefined, status: "start" },
      { at, type: "step", id: "c", phase: "canary 10%", kind: "gate", instance: undefined, status: "ok", detail: "412 requests within the thresholds" },
      { at, type: "step", id: "c", phase: "canary 50%\u001b[2J; rm -rf /", kind: "gate", instance: undefined, status: "ok" },
      { at, type: "step", id: "c", phase: "canary 50%", kind: "gate", instance: undefined, status: "paused", detail: "50% of clients on v2" },
    ];
    const last = lastDeploy(records)!;
    expect(last.paused).toBe("canary 50%");
    expect(last.passedGates).toEqual(["canary 10%"]);
    expect(last.gates.map((g) => g.status)).toEqual(["ok", "ok", "paused"]);
    expect(last.gates[1]!.phase).not.toContain("\u001b");
    expect(last.lastStep).toBe("canary 50%: gate (paused)");
  });
});

describe("fileJournal", () => {
  const entries = [
    { type: "deploy", id: "a", version: "v2", strategy: "rolling", instances: [{ id: "x", from: "v1" }] },
    { type: "step", id: "a", phase: "batch 1/1", kind: "stop", instance: "x", status: "start" },
    { type: "step", id: "a", phase: "batch 1/1", kind: "stop", instance: "x", status: "ok" },
  ] as const;

  it("writes the same lines through the executor's appendFile and through a shell command", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nodrop-journal-"));
    const local = localExecutor();
    // An executor without appendFile (as over SSH) appends with `cat >>`.
    const shellOnly = { name: "shell", host: "local", exec: local.exec };
    for (const [name, executor] of [["fast", local], ["shell", shellOnly]] as const) {
      const journal = fileJournal(executor, path.join(dir, name, "journal.jsonl"));
      await Promise.all(entries.map((e) => journal.append(e)));
      const records = await journal.read();
      expect(records.map(({ at: _, ...rest }) => rest)).toEqual(entries);
    }
    const strip = (file: string) => readFileSync(file, "utf8").replace(/"at":"[^"]+",/g, "");
    expect(strip(path.join(dir, "fast", "journal.jsonl"))).toBe(strip(path.join(dir, "shell", "journal.jsonl")));
  });

  it("a journal that is there but cannot be read is E_JOURNAL naming the file, never an empty journal", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nodrop-journal-"));
    const file = path.join(dir, "journal.jsonl");
    // An unfinished deploy on record, in a file this uid may write to but not read.
    writeFileSync(file, `${JSON.stringify({ at: "2026-12-01T00:00:00.000Z", ...entries[0] })}\n`, { mode: 0o200 });
    const local = localExecutor();
    // root reads it anyway: its commands run without the capabilities that pass over file modes, as any other deployer's do.
    const asDeployer = process.geteuid?.() === 0 ? { name: "local", host: "local", exec: (command: string, options?: ExecOptions) => local.exec(`setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search -- bash -c ${shellQuote(command)}`, options) } : local;
    const error = await rejected(fileJournal(asDeployer, file).read());
    expect(error.code).toBe("E_JOURNAL");
    expect(error.message).toContain(`cannot read the journal ${file} on local (`);
    expect(error.message).toContain("Permission denied");
    // Readable again, the same journal reads as what it holds; absent, as empty.
    chmodSync(file, 0o600);
    expect((await fileJournal(asDeployer, file).read()).map((r) => r.type)).toEqual(["deploy"]);
    expect(await fileJournal(asDeployer, path.join(dir, "none.jsonl")).read()).toEqual([]);
  });

  it("a journal that cannot be written is E_JOURNAL naming the file", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "nodrop-journal-"));
    writeFileSync(path.join(dir, "blocker"), "a file where a directory should be");
    const file = path.join(dir, "blocker", "journal.jsonl");
    const error = await rejected(fileJournal(localExecutor(), file).append(entries[0]));
    expect(error.code).toBe("E_JOURNAL");
    expect(error.message).toContain(`cannot write the journal ${file} on local`);
  });
});

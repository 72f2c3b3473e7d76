// kill -9 at the journal's step boundaries (issue 14, item 7), under load, for a rolling, a
// half-split and a sticky deploy. Each strategy's fleet first runs one deploy to enumerate its
// journal records; then, for each kill point k, a deploy of the next version is started as a child
// process and sent SIGKILL as soon as its k-th record is in the journal. After each kill: the orphaned
// commands are let finish, `nodrop status` must be truthful (it says the deploy did not finish, its last
// step, and which instance runs which version, as each instance answers when probed directly), then
// `nodrop resume` or `nodrop rollback` (alternating) must bring every instance to one version in the
// pool, with 0 failed requests during the kill and the recovery and `nginx -t` passing.
//
// By default it kills at a deterministic subset of the boundaries that covers every kind of state a
// kill leaves, for each strategy (after "deploy", and after each of route, stop, update, start and
// check's "ok"; see SUBSET_KINDS), to fit CI's time. Two points are killed for one strategy only, as
// they leave the same state whatever the strategy: after "deploy" (nothing touched yet; resume plans
// from the routing in force) and after "end" (a no-op but for the lock it leaves). The full matrix, every boundary:
//   NODROP_KILL_POINTS=all pnpm exec vitest run --project integration examples/wsgi-fleet/test/kill-points.test.ts
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { promisify } from "node:util";
import type { JournalRecord } from "@nodrop/core";
import { sleep } from "@nodrop/core";
import { startLoad } from "@nodrop/loadgen";
import { afterAll, describe, expect, it } from "vitest";
import { type Fleet, fleetSh, startFleet } from "../src/index.js";
import {
  deployKilledAt,
  describeRecord,
  lastDeployRecords,
  lastStepText,
  probeVersions,
  readJournal,
  recordKind,
  runNodropWithin,
  waitForOrphans,
  waitSettled,
} from "../src/kill-points.js";

const execFileP = promisify(execFile);
const FULL = process.env.NODROP_KILL_POINTS === "all";
/** Releases that pass their health check; each kill point deploys the next one after the fleet's. */
const GOOD = ["v1", "v2", "v4"];
const next = (v: string) => GOOD[(GOOD.indexOf(v) + 1) % GOOD.length]!;

interface StrategyCase {
  name: string;
  strategy: Record<string, unknown>;
  ports: number[];
  proxyPort: number;
  /** Also kill once after the "end" record (one strategy is enough: it is a no-op but for the lock). */
  afterEnd?: boolean;
  /** Also kill once after the "deploy" record (one strategy is enough: nothing is touched yet). */
  afterDeploy?: boolean;
  localAddresses?: string[];
}

const cases: StrategyCase[] = [
  { name: "rolling", strategy: { name: "rolling", batchSize: 1 }, ports: [8511, 8512], proxyPort: 18511, afterEnd: true, afterDeploy: true },
  { name: "half-split", strategy: { name: "half-split", switchDelay: "200ms" }, ports: [8521, 8522], proxyPort: 18521 },
  // Address affinity is real: each client has its own loopback address.
  { name: "sticky", strategy: { name: "sticky" }, ports: [8531, 8532], proxyPort: 18531, localAddresses: Array.from({ length: 8 }, (_, i) => `127.0.8.${i + 1}`) },
];

/** Every record kind a deploy without soak writes; an enumeration without one of them is refused. */
const KINDS = ["deploy", ...["route", "stop", "update", "start", "check"].flatMap((k) => [`${k} start`, `${k} ok`]), "end"];

/**
 * CI's subset: one boundary per kind of state a kill can leave, taking the kinds' occurrences in
 * turn (the first kind its first occurrence, the second its second, ...), so the points spread over
 * the phases. The kinds are "deploy" and each step's "ok": a kill just after a step's "start"
 * record lands before the step's command is spawned (the full matrix has never found one running),
 * so it leaves the state of the record before it, which the full matrix covers.
 */
const SUBSET_KINDS = KINDS.filter((k) => k === "deploy" || k.endsWith(" ok"));
const subsetKinds = (c: StrategyCase) => SUBSET_KINDS.filter((k) => k !== "deploy" || c.afterDeploy);
function subset(records: readonly JournalRecord[], kinds: readonly string[]): number[] {
  const byKind = new Map<string, number[]>();
  records.slice(0, -1).forEach((r, i) => {
    if (kinds.includes(recordKind(r))) byKind.set(recordKind(r), [...(byKind.get(recordKind(r)) ?? []), i + 1]);
  });
  return [...byKind.values()].map((positions, j) => positions[j % positions.length]!).sort((a, b) => a - b);
}

interface Outcome {
  strategy: string;
  k: number;
  record: string;
  /** Records in the journal when the process died (k, or more when the next came within the kill's lag). */
  landedAfter: number;
  command: "resume" | "rollback";
  recovered: boolean;
  problems: string[];
  ms: number;
  orphans: string[];
  lockTakeover: string;
  /** ms: the deploy until its death, orphans + status checks, the recovery. */
  timings: Record<string, number>;
  /** From the watcher seeing record k to the kill being sent. */
  killLagMs: number;
}

interface Matrix {
  strategy: string;
  records: number;
  tried: number;
  recovered: number;
  expected: number;
  ms: number;
}

const outcomes: Outcome[] = [];
const matrices: Matrix[] = [];
const fleets: Fleet[] = [];

interface Status {
  instances: { id: string; port: number; version?: string; healthy: boolean; inPool?: boolean }[];
  lastDeploy?: { version: string; finished: boolean; ok?: boolean; lastStep?: string };
  lock: unknown;
}

describe(`kill -9 at the journal's step boundaries, under load (real nginx + gunicorn; ${FULL ? "every boundary" : "every record kind"})`, () => {
  afterAll(async () => {
    const tried = outcomes.length;
    const recovered = outcomes.filter((o) => o.recovered).length;
    const enumerated = matrices.reduce((sum, m) => sum + m.records - 1, 0) + cases.filter((c) => c.afterEnd).length;
    console.log(
      `kill points: ${tried}, recovered: ${recovered}` +
        (FULL ? " (every boundary of each strategy)" : ` (a subset: every step's ok record of each strategy, and deploy and end of one, ${tried} of ${enumerated} boundaries; NODROP_KILL_POINTS=all kills at every one)`),
    );
    for (const m of matrices) console.log(`  ${m.strategy}: ${m.records} records, ${m.tried} kill points, ${m.recovered} recovered, ${(m.ms / 1000).toFixed(1)} s`);
    for (const o of outcomes) {
      console.log(
        `  ${o.recovered ? "recovered" : "FAILED   "} ${o.strategy} k=${o.k} (${o.record})${o.landedAfter !== o.k ? `, died after record ${o.landedAfter}` : ""}: ${o.command}${o.lockTakeover ? `, ${o.lockTakeover}` : ""}, ${(o.ms / 1000).toFixed(1)} s, kill ${o.killLagMs.toFixed(1)} ms after the record${o.orphans.length ? `, orphans: ${o.orphans.join(" / ")}` : ""} [${Object.entries(o.timings).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)}`).join(", ")}]`,
      );
      for (const p of o.problems) console.log(`      ${p.replaceAll("\n", "\n      ")}`);
    }
    for (const fleet of fleets) await fleet.stop();
  });

  it.each(cases.map((c, index) => ({ ...c, index })))(
    "$name",
    async (strategyCase) => {
      const { name, strategy, ports, proxyPort, afterEnd, localAddresses, index } = strategyCase;
      const fleet = await startFleet({ ports, proxyPort, strategy, health: { interval: "50ms", successes: 2, deadline: "20s" }, proxy: { drainTimeout: "20s" }, commandTimeout: "20s" });
      fleets.push(fleet);
      const load = (seed: number) => startLoad({ url: fleet.url, clients: 8, seed, postRatio: 0.1, slowRatio: 0.1, slowMs: 200, durationMs: 300_000, ...(localAddresses ? { localAddresses } : {}) });
      const waitRequests = async (run: ReturnType<typeof load>, n: number) => {
        while (run.completed() < n) await sleep(5);
      };

      // The enumeration: one whole deploy, v1 -> v2, under the same load.
      const dry = load(1000 + index);
      await waitRequests(dry, 16);
      const first = await runNodropWithin(["deploy", "--config", fleet.configFile, "--version", "v2"]);
      dry.stop();
      expect(first.code, first.stderr).toBe(0);
      expect((await dry.done).stats.failed).toBe(0);
      const enumeration = lastDeployRecords(await readJournal(fleet));
      const N = enumeration.length;
      console.log(`${name}: ${N} journal records\n  ${enumeration.map((r, i) => `${i + 1} ${describeRecord(r)}`).join("\n  ")}`);
      expect(new Set(enumeration.map(recordKind))).toEqual(new Set(KINDS));
      expect(enumeration.at(-1)).toMatchObject({ type: "end", ok: true });

      const points = [...(FULL ? Array.from({ length: N - 1 }, (_, i) => i + 1) : subset(enumeration, subsetKinds(strategyCase))), ...(afterEnd ? [N] : [])];
      const expected = (FULL ? N - 1 : subsetKinds(strategyCase).length) + (afterEnd ? 1 : 0);
      const mine: Outcome[] = [];
      let current = "v2";
      const started = performance.now();
      for (const [i, k] of points.entries()) {
        const target = next(current);
        // Alternate the two, shifted per strategy so each record kind gets both across strategies;
        // after "end" there is nothing to resume: rollback, a real deploy that must take the lock over.
        const command: "resume" | "rollback" = k === N || (i + index) % 2 === 1 ? "rollback" : "resume";
        const outcome = await killPoint({ fleet, name, k, N, enumeration, target, previous: current, command, load: load(k) });
        mine.push(outcome);
        outcomes.push(outcome);
        const versions = new Set(Object.values(await probeVersions(fleet)));
        if (outcome.recovered) current = command === "resume" ? target : current;
        else {
          // Bring the fleet back so the next point starts clean (the point stays failed): onto the one
          // version it runs, or the one it ran before.
          const only = [...versions];
          const version = only.length === 1 && GOOD.includes(only[0]!) ? only[0]! : current;
          const repaired = await repair(fleet, version);
          if (!repaired.ok) {
            outcome.problems.push(`repair failed, remaining points not tried: ${repaired.detail}`);
            break;
          }
          current = version;
        }
      }
      const ms = performance.now() - started;
      const recovered = mine.filter((o) => o.recovered).length;
      matrices.push({ strategy: name, records: N, tried: mine.length, recovered, expected, ms });
      expect(mine.filter((o) => !o.recovered).map((o) => `k=${o.k} (${o.record}): ${o.problems.join("; ")}`)).toEqual([]);
      expect(mine.length).toBe(expected);
      expect(points.length).toBe(expected);
    },
    FULL ? 1_500_000 : 400_000,
  );
});

/** Puts the fleet back on `version`, every instance in the pool, after a point that did not recover. */
async function repair(fleet: Fleet, version: string): Promise<{ ok: boolean; detail: string }> {
  const versions = await waitSettled(fleet);
  for (const i of fleet.instances) {
    if (versions[String(i.port)] !== "down") continue;
    await execFileP(fleetSh, [fleet.dir, "stop", String(i.port)]);
    await execFileP(fleetSh, [fleet.dir, "update", String(i.port), version]);
    await execFileP(fleetSh, [fleet.dir, "start", String(i.port)]);
  }
  await waitSettled(fleet);
  const run = await runNodropWithin(["deploy", "--config", fleet.configFile, "--version", version, "--strategy", "rolling"]);
  const after = await probeVersions(fleet);
  const ok = run.code === 0 && Object.values(after).every((v) => v === version);
  return { ok, detail: ok ? "" : `deploy of ${version} exited ${run.code}: ${run.stderr.trim().split("\n").at(-1)}; instances ${JSON.stringify(after)}` };
}

interface KillPointInput {
  fleet: Fleet;
  name: string;
  k: number;
  N: number;
  enumeration: readonly JournalRecord[];
  target: string;
  previous: string;
  command: "resume" | "rollback";
  load: ReturnType<typeof startLoad>;
}

/** One kill point: deploy `target`, kill -9 after record k, check status, recover, check the fleet and the load. */
async function killPoint(input: KillPointInput): Promise<Outcome> {
  const { fleet, k, N, enumeration, target, previous, command, load } = input;
  const problems: string[] = [];
  const started = performance.now();
  const cfg = ["--config", fleet.configFile];
  let landedAfter = -1;
  let orphans: string[] = [];
  let lockTakeover = "";
  let evidence = "";
  const diagnostics: string[] = [];
  let killLagMs = Number.NaN;
  const timings: Record<string, number> = {};
  try {
    while (load.completed() < 16) await sleep(5);
    const tag = `${input.name}-${k}-${randomUUID()}`;
    const killed = await deployKilledAt(fleet, { version: target, k, tag });
    landedAfter = killed.records.length;
    killLagMs = killed.killLagMs;
    const tail = killed.records.slice(-4).map(describeRecord).join(" | ");
    evidence = `journal tail: ${tail}`;
    if (killed.exit.signal !== "SIGKILL") problems.push(`the deploy was not killed (exit ${killed.exit.code}, signal ${killed.exit.signal}); ${killed.stderr.slice(-500)}`);
    if (landedAfter < k) problems.push(`the journal has ${landedAfter} records, fewer than ${k}`);
    const shapes = (rs: readonly JournalRecord[]) => rs.slice(0, landedAfter).map(describeRecord);
    if (JSON.stringify(shapes(killed.records)) !== JSON.stringify(shapes(enumeration))) problems.push(`the killed deploy's records differ from the enumeration: ${shapes(killed.records).join(" | ")}`);
    timings.deploy = performance.now() - started;
    orphans = (await waitForOrphans(tag)).orphans;
    const t1 = performance.now();

    // `nodrop status`, checked against what the instances answer before and after it (both must agree:
    // a state that changes under it would make the comparison luck).
    let status: Status | undefined;
    let statusText = "";
    let statusCode = -1;
    for (let attempt = 0; attempt < 5; attempt++) {
      const before = await waitSettled(fleet);
      const json = await runNodropWithin(["status", ...cfg, "--json"]);
      const text = await runNodropWithin(["status", ...cfg]);
      const after = await probeVersions(fleet);
      if (JSON.stringify(before) !== JSON.stringify(after)) continue;
      status = JSON.parse(json.stdout) as Status;
      statusText = text.stdout;
      statusCode = text.code;
      const truth = status.instances.map((i) => [i.id, i.healthy ? i.version : "down"]);
      const probed = fleet.instances.map((i) => [i.id, after[String(i.port)]]);
      if (JSON.stringify(truth) !== JSON.stringify(probed)) problems.push(`status says ${JSON.stringify(truth)}, the instances answer ${JSON.stringify(probed)}`);
      break;
    }
    evidence += `\nstatus:\n${statusText.trim()}`;
    if (!status) problems.push("the instances never held still around a status run");
    else {
      const last = status.lastDeploy;
      const killedLast = killed.records.at(-1);
      if (last?.version !== target) problems.push(`status names the last deploy ${last?.version}, not ${target}`);
      if (killedLast?.type === "end") {
        if (!last?.finished || last.ok !== true) problems.push(`the deploy wrote "end" but status says finished=${last?.finished} ok=${last?.ok}`);
      } else {
        if (last?.finished !== false) problems.push(`status does not say the deploy was interrupted (finished=${last?.finished})`);
        if (!/DID NOT FINISH/.test(statusText) || statusCode === 0) problems.push(`status text does not say it did not finish (exit ${statusCode})`);
        const step = lastStepText(killed.records.findLast((r) => r.type === "step"));
        if (last?.lastStep !== step) problems.push(`status's last step is ${last?.lastStep}, the journal's is ${step}`);
      }
      for (const i of status.instances) if (i.inPool && !i.healthy) problems.push(`status has ${i.id} in the pool but it is not healthy`);
    }
    await fleet.nginx("-t").catch((e: Error) => problems.push(`nginx -t failed after the kill: ${e.message}`));
    timings.status = performance.now() - t1;

    // Recovery. The dead holder's lock is taken over by the CLI itself (its pid is gone on this machine).
    const t2 = performance.now();
    let recovery = await runNodropWithin([command, ...cfg]);
    if (recovery.code !== 0 && /E_LOCK/.test(recovery.stderr)) {
      const lock = await runNodropWithin(["lock", "status", ...cfg, "--json"]);
      lockTakeover = `needed \`nodrop lock release\` (lock status: ${lock.stdout.replace(/\s+/g, " ").slice(0, 300)})`;
      await runNodropWithin(["lock", "release", ...cfg]);
      recovery = await runNodropWithin([command, ...cfg]);
    }
    timings.recovery = performance.now() - t2;
    evidence += `\n${command} (exit ${recovery.code}${recovery.timedOut ? ", timed out" : ""}):\n${recovery.stderr.trim().split("\n").slice(-6).join("\n")}`;
    const expectedVersion = command === "resume" ? target : previous;
    if (recovery.code !== 0) {
      problems.push(`${command} exited ${recovery.code}: ${recovery.stderr.trim().split("\n").at(-1)}`);
      // Not a recovery, only evidence for the report: what would have brought the fleet back.
      for (const alt of command === "resume" ? [["resume", "--strategy", "rolling"], ["rollback"]] : [["resume"], ["resume", "--strategy", "rolling"]]) {
        const tried = await runNodropWithin([...alt, ...cfg]);
        diagnostics.push(`\`nodrop ${alt.join(" ")}\` exited ${tried.code}${tried.code === 0 ? "" : `: ${tried.stderr.trim().split("\n").at(-1)}`}`);
        if (tried.code === 0) break;
      }
    } else {
      const words = command === "resume" ? `resuming the deploy of ${target}` : `rolling back from ${target} to ${previous}`;
      if (!recovery.stderr.includes(words)) problems.push(`${command} did not say "${words}"`);
      const versions = await probeVersions(fleet);
      if (!Object.values(versions).every((v) => v === expectedVersion)) problems.push(`after ${command} the instances answer ${JSON.stringify(versions)}, expected ${expectedVersion} everywhere`);
      const final = JSON.parse((await runNodropWithin(["status", ...cfg, "--json"])).stdout) as Status;
      for (const i of final.instances) if (!i.inPool || !i.healthy || i.version !== expectedVersion) problems.push(`after ${command}: ${i.id} ${i.version} healthy=${i.healthy} inPool=${i.inPool}`);
      if (!final.lastDeploy?.finished || final.lastDeploy.ok !== true) problems.push(`after ${command} the last deploy is not finished ok: ${JSON.stringify(final.lastDeploy)}`);
      if (final.lock) problems.push(`after ${command} the lock is still held: ${JSON.stringify(final.lock)}`);
    }
    await fleet.nginx("-t").catch((e: Error) => problems.push(`nginx -t failed after ${command}: ${e.message}`));
  } catch (error) {
    problems.push(`threw: ${(error as Error).stack ?? String(error)}`);
  } finally {
    load.stop();
  }
  const { stats } = await load.done;
  if (stats.failed !== 0) problems.push(`${stats.failed} of ${stats.requests} requests failed: ${JSON.stringify(stats.errors)} ${JSON.stringify(stats.byStatus)}`);
  if (problems.length > 0 && evidence) problems.push(evidence);
  if (diagnostics.length > 0) problems.push(`afterwards (evidence only): ${diagnostics.join("; ")}`);
  return {
    strategy: input.name,
    k,
    record: k <= N ? describeRecord(enumeration[k - 1]!) : "?",
    landedAfter,
    command,
    recovered: problems.length === 0,
    problems,
    ms: performance.now() - started,
    orphans,
    lockTakeover,
    timings,
    killLagMs,
  };
}

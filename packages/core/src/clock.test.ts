// measureClockOffset against executors whose "host" reads a clock a known offset away, at a known
// point of each command's round trip: a slow start (a session and a shell to set up), then a quick
// way back, as over SSH.
import { describe, expect, it } from "vitest";
import { measureClockOffset } from "./clock.js";
import type { ExecResult, Executor } from "./executor.js";
import { sleep } from "./duration.js";
import { rejected } from "./test-support.js";

/** A host `offsetMs` ahead (per command, when a list) whose commands take `startMs[i]` before the clock is read and `backMs` after. */
function host(offsetMs: number | readonly number[], startMs: readonly number[], backMs: number, stdout?: string): Executor & { commands: string[] } {
  const commands: string[] = [];
  return {
    name: "scripted",
    host: "lb1",
    commands,
    async exec(command: string): Promise<ExecResult> {
      const start = startMs[commands.length % startMs.length]!;
      const offset = typeof offsetMs === "number" ? offsetMs : offsetMs[commands.length % offsetMs.length]!;
      commands.push(command);
      await sleep(start);
      const reading = stdout ?? String(Date.now() + offset);
      await sleep(backMs);
      return { code: 0, stdout: `${reading}\n`, stderr: "", durationMs: start + backMs };
    },
  };
}

describe("measureClockOffset", () => {
  it("puts the estimate where the host read its clock, at the end of a slow start, not at the round trip's midpoint", async () => {
    // A start of 60-120 ms: the midpoint would say +5030 to +5060.
    const lb1 = host(5000, [120, 60, 90, 100, 80], 2);
    const clock = await measureClockOffset(lb1);
    expect(lb1.commands).toEqual(Array(5).fill("date +%s%3N"));
    expect(clock.offsetMs).toBeGreaterThanOrEqual(4980);
    expect(clock.offsetMs).toBeLessThanOrEqual(5001);
    // The true offset is within the bound; the bound is no wider than the fastest round trip (62 ms, and timer slack).
    expect(clock.offsetMs + clock.errorMs).toBeGreaterThanOrEqual(5000);
    expect(clock.errorMs).toBeLessThan(62 + 60);
  });

  it("two hosts on one clock, one slower to start commands, come out within a few ms of each other (the midpoints would be 30 ms apart)", async () => {
    const [a, b] = await Promise.all([measureClockOffset(host(0, [40, 60], 1)), measureClockOffset(host(0, [100, 120], 1))]);
    expect(Math.abs(a.offsetMs - b.offsetMs)).toBeLessThanOrEqual(15);
  });

  it("one sample gives the interval of its own round trip", async () => {
    const clock = await measureClockOffset(host(-250, [30], 1), { samples: 1 });
    expect(clock.offsetMs).toBeGreaterThanOrEqual(-270);
    expect(clock.offsetMs).toBeLessThanOrEqual(-250);
    expect(clock.offsetMs + clock.errorMs).toBeGreaterThanOrEqual(-250);
  });

  it("a host whose clock is stepped while it is read (no offset fits every sample) is refused, saying how far it moved", async () => {
    const error = await rejected(measureClockOffset(host([0, 0, 800, 800, 800], [20], 1)));
    expect(error).toMatchObject({ code: "E_PREFLIGHT" });
    expect(error.message).toMatch(/^the clock on lb1 moved by \d+ms while nodrop read it \(5 readings in a row\): deploy again once it is steady$/);
    expect(Number(/moved by (\d+)ms/.exec(error.message)![1])).toBeGreaterThan(700);
  });

  it("a host that answers something other than milliseconds since the epoch is refused, naming it", async () => {
    const error = await rejected(measureClockOffset(host(0, [1], 1, "+%s%3N"), { samples: 1 }));
    expect(error).toMatchObject({ code: "E_PREFLIGHT" });
    expect(error.message).toBe("cannot read the clock on lb1: +%s%3N");
  });
});

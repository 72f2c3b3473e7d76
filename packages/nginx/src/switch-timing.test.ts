import { describe, expect, it } from "vitest";
import { MASTER_OVERLAP_MS, SwitchTiming, lateSwitchWarning } from "./switch-timing.js";

describe("SwitchTiming", () => {
  it("with nothing measured, the strategy's delay stands when it covers the master's overlap and a few polls", () => {
    expect(new SwitchTiming(25).delayFor(500)).toBe(500);
    expect(new SwitchTiming(25).delayFor(50)).toBe(MASTER_OVERLAP_MS + 4 * 25);
  });

  it("goes past three parses plus the overlap, and past twice the slowest close, whichever is later", () => {
    const timing = new SwitchTiming(25);
    timing.noteParse(300);
    expect(timing.delayFor(500)).toBe(100 + 900 + 100);
    timing.noteClose(800);
    timing.noteClose(400);
    expect(timing.delayFor(500)).toBe(1600);
    expect(timing.delayFor(5000)).toBe(5000);
  });

  it("ignores a measurement that is not a number", () => {
    const timing = new SwitchTiming(25);
    timing.noteClose(Number.NaN);
    timing.noteParse(Number.POSITIVE_INFINITY);
    expect(timing.delayFor(500)).toBe(500);
  });
});

describe("SwitchTiming.givenInstantProblem", () => {
  it("takes an instant that leaves the overlap and two parses; refuses one in the past, too close or not a time, naming the host", () => {
    const timing = new SwitchTiming(25);
    expect(timing.givenInstantProblem("lb2", MASTER_OVERLAP_MS)).toBeUndefined();
    timing.noteParse(200);
    expect(timing.givenInstantProblem("lb2", 500)).toBeUndefined();
    expect(timing.givenInstantProblem("lb2", 499)).toBe(
      "the switch instant given for nginx on lb2 is only 499ms away on its clock, and this nginx needs at least 500ms (its 100ms overlap and two parses of its config): raise strategy.switchDelay, or look at the link to lb2",
    );
    expect(timing.givenInstantProblem("lb2", -1200)).toContain("is 1200ms in the past on its clock");
    expect(timing.givenInstantProblem("lb2", Number.NaN)).toContain("is not a time on its clock");
  });
});

describe("lateSwitchWarning", () => {
  it("says nothing when the old generation was seen closed by the instant", () => {
    expect(lateSwitchWarning("proxy1", 10_000, 10_000, 500)).toBeUndefined();
    expect(lateSwitchWarning("proxy1", 10_000, 9_000, 500)).toBeUndefined();
  });

  it("names the host, how late, the delay used and what to raise", () => {
    expect(lateSwitchWarning("proxy1", 10_000, 10_120, 500)).toBe(
      "nginx on proxy1: the previous worker generation was seen closed 120ms after the switch instant (the switch was set 500ms after the change began): requests it took in between may have had the old version after the first new one; raise strategy.switchDelay",
    );
    expect(lateSwitchWarning("proxy1", 10_000, undefined, 500)).toMatch(/was not seen closed within the confirm timeout/);
  });
});

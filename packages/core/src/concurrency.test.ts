import { describe, expect, it } from "vitest";
import { allInOrder, forEachLimit, forEachPerHost } from "./concurrency.js";

/** Runs items that each take a tick and records the most in flight, overall and per host. */
async function observe(run: (fn: (item: { host: string; id: number }) => Promise<void>) => Promise<void>) {
  const now = new Map<string, number>();
  const peak = new Map<string, number>();
  let total = 0;
  let peakTotal = 0;
  const done: number[] = [];
  const error = await run(async (item) => {
    now.set(item.host, (now.get(item.host) ?? 0) + 1);
    total += 1;
    peak.set(item.host, Math.max(peak.get(item.host) ?? 0, now.get(item.host)!));
    peakTotal = Math.max(peakTotal, total);
    await new Promise((r) => setTimeout(r, 5));
    now.set(item.host, now.get(item.host)! - 1);
    total -= 1;
    done.push(item.id);
    if (item.id === 3) throw new Error("item 3 failed");
  }).then(
    () => undefined,
    (e: Error) => e.message,
  );
  return { peak: Object.fromEntries(peak), peakTotal, done: done.sort((a, b) => a - b), error };
}

const items = Array.from({ length: 12 }, (_, id) => ({ host: `h${id % 3}`, id }));

describe("forEachPerHost", () => {
  it("caps each host at the limit while hosts run side by side, and throws only after every item ran", async () => {
    const seen = await observe((fn) => forEachPerHost(items, (i) => i.host, 2, fn));
    expect(seen.peak).toEqual({ h0: 2, h1: 2, h2: 2 });
    expect(seen.peakTotal).toBe(6);
    expect(seen.done).toEqual(items.map((i) => i.id));
    expect(seen.error).toBe("item 3 failed");
  });

  it("forEachLimit caps the total instead", async () => {
    const seen = await observe((fn) => forEachLimit(items, 2, fn));
    expect(seen.peakTotal).toBe(2);
    expect(seen.done).toHaveLength(12);
  });
});

describe("allInOrder", () => {
  const after = <T>(ms: number, value: T, fail = false) => new Promise<T>((resolve, reject) => setTimeout(() => (fail ? reject(new Error(String(value))) : resolve(value)), ms));

  it("resolves with the values in the order given, whichever settled first", async () => {
    expect(await allInOrder([after(30, "a"), after(1, 2), after(15, true)])).toEqual(["a", 2, true]);
  });

  it("rejects with the first failure in the order given, not the first to arrive, and only once all have settled", async () => {
    let lastSettled = false;
    const last = after(80, "c").then((v) => ((lastSettled = true), v));
    await expect(allInOrder([after(1, "a"), after(40, "first", true), after(1, "second", true), last])).rejects.toThrow("first");
    expect(lastSettled).toBe(true);
  });
});

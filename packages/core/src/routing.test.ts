import { describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { routedPort, sameRouting, servingInstances, singlePool, validateRouting, withSlots } from "./routing.js";
import type { Routing } from "./types.js";

const known = new Set(["a", "b", "c", "d"]);

function problem(routing: Routing): string {
  try {
    validateRouting(routing, known);
  } catch (error) {
    expect(NodropError.is(error)).toBe(true);
    expect((error as NodropError).code).toBe("E_PLAN");
    return (error as NodropError).message;
  }
  throw new Error("expected validateRouting to throw");
}

describe("singlePool", () => {
  it("builds one pool that is the default", () => {
    expect(singlePool(["a", "b"])).toEqual({ pools: { all: ["a", "b"] }, defaultPool: "all", pins: {} });
    expect(singlePool(["a"], "blue", { v1: "blue" })).toEqual({ pools: { blue: ["a"] }, defaultPool: "blue", pins: { v1: "blue" } });
  });

  it("copies the id list", () => {
    const ids = ["a"];
    const routing = singlePool(ids);
    ids.push("b");
    expect(routing.pools.all).toEqual(["a"]);
  });
});

describe("validateRouting", () => {
  it("accepts a valid routing with pins", () => {
    expect(() => validateRouting({ pools: { a: ["a", "b"], b: ["c"] }, defaultPool: "b", pins: { "v1.0": "a", v2: "b" } }, known)).not.toThrow();
    expect(() => validateRouting(singlePool(["a", "b", "c", "d"]), known)).not.toThrow();
  });

  it("rejects no pools", () => {
    expect(problem({ pools: {}, defaultPool: "all", pins: {} })).toContain("no pools");
  });

  it("rejects an empty pool", () => {
    expect(problem({ pools: { all: ["a"], spare: [] }, defaultPool: "all", pins: {} })).toContain('pool "spare" is empty');
  });

  it("rejects unknown instance ids", () => {
    expect(problem(singlePool(["a", "zz"]))).toContain('pool "all" names unknown instance "zz"');
  });

  it("rejects an undefined default pool", () => {
    expect(problem({ pools: { all: ["a"] }, defaultPool: "green", pins: {} })).toContain('default pool "green" is not defined');
  });

  it("rejects a pin to a missing pool", () => {
    expect(problem({ pools: { all: ["a"] }, defaultPool: "all", pins: { v2: "new" } })).toContain('pin v2 -> "new" names a pool that is not defined');
  });

  it.each(["All", "1pool", "my-pool", "a b", "", "p".repeat(33)])("rejects pool name %j", (name) => {
    expect(problem({ pools: { [name]: ["a"] }, defaultPool: name, pins: {} })).toContain(`pool name "${name}" must match`);
  });

  it.each(['v1"; }', "v1 v2", "-v1", "v1\n", "~v1", ""])("rejects unsafe pin version %j", (version) => {
    expect(problem({ pools: { all: ["a"] }, defaultPool: "all", pins: { [version]: "all" } })).toContain("is not a safe version string");
  });

  it("rejects an instance listed twice in a pool", () => {
    expect(problem(singlePool(["a", "b", "a"]))).toContain('pool "all" lists an instance twice');
  });

  it("reports every problem in one message", () => {
    const message = problem({ pools: { Bad: [], ok: ["x"] }, defaultPool: "nope", pins: { v1: "gone" } });
    expect(message.split("; ")).toHaveLength(5);
  });

  // Bug: `defaultPool in routing.pools` also finds Object.prototype members, so a default or pin
  // naming "toString"/"constructor" passes although no such pool exists.
  it("rejects a default pool or pin that names an Object.prototype member", () => {
    expect(problem({ pools: { all: ["a"] }, defaultPool: "constructor", pins: {} })).toContain('default pool "constructor" is not defined');
    expect(problem({ pools: { all: ["a"] }, defaultPool: "all", pins: { v2: "toString" } })).toContain("names a pool that is not defined");
  });
});

describe("servingInstances", () => {
  it("is the default pool for a single pool", () => {
    expect([...servingInstances(singlePool(["a", "b"]))].sort()).toEqual(["a", "b"]);
  });

  it("unions the default pool and every pinned pool, and nothing else", () => {
    const routing: Routing = { pools: { old: ["a", "b"], new: ["c"], spare: ["d"] }, defaultPool: "new", pins: { v1: "old", v2: "new" } };
    expect([...servingInstances(routing)].sort()).toEqual(["a", "b", "c"]);
  });

  it("counts an instance in two pools once", () => {
    const routing: Routing = { pools: { x: ["a", "b"], y: ["b", "c"] }, defaultPool: "x", pins: { v9: "y" } };
    expect(servingInstances(routing).size).toBe(3);
  });
});

describe("routing slots", () => {
  const specs = [
    { id: "a", host: "local", address: "127.0.0.1", port: 8011, slots: [8011, 9011] as const },
    { id: "b", host: "local", address: "127.0.0.1", port: 8012 },
  ];

  it("routedPort: the slot the routing names, else the live one, else the first", () => {
    const routing = { ...singlePool(["a", "b"]), slots: { a: 9011 } };
    expect(routedPort(routing, specs[0]!)).toBe(9011);
    expect(routedPort(singlePool(["a"]), specs[0]!, 9011)).toBe(9011);
    expect(routedPort(singlePool(["a"]), specs[0]!)).toBe(8011);
  });

  it("withSlots lists every instance with slots, keeping the live slot of those it leaves out", () => {
    expect(withSlots(singlePool(["a", "b"]), specs, () => 9011).slots).toEqual({ a: 9011 });
    expect(withSlots({ ...singlePool(["a"]), slots: { a: 8011 } }, specs, () => 9011).slots).toEqual({ a: 8011 });
  });

  it("validateRouting refuses a slot that is not one of the instance's ports, or on an instance with one port", () => {
    expect(() => validateRouting({ ...singlePool(["a"]), slots: { a: 7011 } }, specs)).toThrow(/slot 7011 of "a" is not one of its ports \(8011, 9011\)/);
    expect(() => validateRouting({ ...singlePool(["b"]), slots: { b: 8012 } }, specs)).toThrow(/slot 8012 of "b" is not one of its ports \(it has one slot\)/);
    expect(() => validateRouting({ ...singlePool(["a"]), slots: { ghost: 1 } }, specs)).toThrow(/slots name unknown instance "ghost"/);
    expect(() => validateRouting({ ...singlePool(["a"]), slots: { a: 9011 } }, specs)).not.toThrow();
  });

  it("sameRouting tells routings apart by their slots", () => {
    expect(sameRouting({ ...singlePool(["a"]), slots: { a: 9011 } }, { ...singlePool(["a"]), slots: { a: 8011 } })).toBe(false);
    expect(sameRouting({ ...singlePool(["a"]), slots: { a: 9011 } }, { ...singlePool(["a"]), slots: { a: 9011 } })).toBe(true);
  });
});

describe("a routing's split (a canary)", () => {
  const specs = ["a", "b", "c"];
  const base = { pools: { stable: ["a", "b"], canary: ["c"] }, defaultPool: "stable", pins: { v2: "canary" } };
  it("reaches the split's pool and counts it in sameRouting", () => {
    const split = { ...base, split: { key: "$remote_addr$http_user_agent", percent: 5, to: "canary" } };
    expect([...servingInstances(split)].sort()).toEqual(["a", "b", "c"]);
    expect(() => validateRouting(split, new Set(specs))).not.toThrow();
    expect(sameRouting(split, { ...split, split: { ...split.split, percent: 25 } })).toBe(false);
    expect(sameRouting(split, base)).toBe(false);
  });
  it.each([
    ["a key that is not a client variable", { key: "$request_id", percent: 5, to: "canary" }, "split key"],
    ["a key with text spliced in", { key: '$remote_addr"; }', percent: 5, to: "canary" }, "split key"],
    ["0%", { key: "$remote_addr", percent: 0, to: "canary" }, "split percent 0"],
    ["100%", { key: "$remote_addr", percent: 100, to: "canary" }, "split percent 100"],
    ["three decimals", { key: "$remote_addr", percent: 0.125, to: "canary" }, "at most two decimals"],
    ["NaN", { key: "$remote_addr", percent: Number.NaN, to: "canary" }, "split percent NaN"],
    ["a missing pool", { key: "$remote_addr", percent: 5, to: "nope" }, 'split to "nope"'],
    ["the default pool", { key: "$remote_addr", percent: 5, to: "stable" }, "is the default pool"],
  ])("refuses %s", (_name, split, message) => {
    expect(() => validateRouting({ ...base, split }, new Set(specs))).toThrow(message);
  });
});

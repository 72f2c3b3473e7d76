import { type Proxy, type ProxyApplyResult, type ProxyInstance, type Routing, servingInstances, singlePool, validateRouting } from "@nodrop/core";
import { type SuiteOptions, type TestApi, registerSuite } from "./api.js";
import { ConformanceError, describeError, equal, nodropError, ok, rejects, show } from "./assert.js";

export interface ProxyFixture {
  /** The adapter under test, in front of a real proxy that routes to `instances`. */
  readonly proxy: Proxy;
  /** At least two backends, each answering with its own id. */
  readonly instances: readonly ProxyInstance[];
  /** Sends one request through the proxy: the id of the instance that answered, undefined when it failed. */
  request(): Promise<string | undefined>;
  /**
   * Optional: one request on a new connection that the backend answers only after `ms`. With it,
   * the check of `backgroundDrain` holds requests in flight across the change and requires that
   * `drained` settles only after they have been answered.
   */
  slowRequest?(ms: number): Promise<string | undefined>;
  /** Stops the proxy and the backends and removes what setup created. */
  cleanup(): Promise<void>;
}

export interface ProxySuiteOptions extends SuiteOptions {
  readonly setup: () => Promise<ProxyFixture>;
  /** Requests sent after each change (default 50, and at least 10 per instance in the pool). */
  readonly requests?: number | undefined;
}

const UNKNOWN_ID = "nodrop-testkit-unknown";

/**
 * What the engine needs from a proxy adapter: its setup check, honest capabilities, and apply()
 * that resolves only once the routing is in force (after it, no request reaches a removed
 * instance: the engine stops that instance next), that refuses a bad routing while the previous
 * one stays in force, and that reports what it did. The checks run in order and build on each
 * other (each applies a routing the next one starts from).
 */
export function proxySuite(api: TestApi, options: ProxySuiteOptions): void {
  registerSuite(api, "nodrop proxy conformance", options, ({ test, fixture }) => {
    const get = fixture(async () => {
      const f = await options.setup();
      if (f.instances.length < 2) {
        await f.cleanup();
        throw new ConformanceError(`setup must give at least two instances (one is taken out of the pool), got ${f.instances.length}`);
      }
      return f;
    }, (f) => f.cleanup());
    const generations: string[] = [];
    let applied: Routing | undefined;
    const all = (f: ProxyFixture) => f.instances.map((i) => i.id);
    const removedId = (f: ProxyFixture) => f.instances.at(-1)!.id;

    const apply = async (f: ProxyFixture, routing: Routing, what: string, backgroundDrain = false): Promise<ProxyApplyResult> => {
      let result: ProxyApplyResult;
      try {
        result = await f.proxy.apply(routing, f.instances, backgroundDrain ? { backgroundDrain } : {});
      } catch (error) {
        throw new ConformanceError(`apply(${what}) rejected: ${describeError(error)}`);
      }
      ok(typeof result?.generation === "string" && result.generation !== "", `apply(${what}) must resolve with a non-empty generation string, got ${show(result?.generation)}`);
      for (const key of ["confirmMs", "drainMs"] as const) {
        ok(typeof result[key] === "number" && Number.isFinite(result[key]) && result[key] >= 0, `apply(${what}): ${key} must be a number >= 0, got ${show(result[key])}`);
      }
      ok(!generations.includes(result.generation), `apply(${what}) resolved with generation ${show(result.generation)}, which an earlier apply already reported (${generations.join(", ")}): each config in force needs its own`);
      generations.push(result.generation);
      applied = routing;
      return result;
    };

    /** Sends requests through the proxy; every one must succeed and reach an instance of `allowed`. */
    const send = async (f: ProxyFixture, allowed: readonly string[], after: string): Promise<Map<string, number>> => {
      const count = Math.max(options.requests ?? 50, 10 * allowed.length);
      const seen = new Map<string, number>();
      let failed = 0;
      const strays = new Map<string, number>();
      for (let i = 0; i < count; i++) {
        const id = await f.request();
        if (id === undefined) failed += 1;
        else if (!allowed.includes(id)) strays.set(id, (strays.get(id) ?? 0) + 1);
        else seen.set(id, (seen.get(id) ?? 0) + 1);
      }
      const problems: string[] = [];
      if (failed > 0) problems.push(`${failed} failed`);
      if (strays.size > 0) problems.push(`reached instances outside the pool: ${[...strays].map(([id, n]) => `${id} ${n}x`).join(", ")}`);
      if (problems.length > 0) throw new ConformanceError(`${after}, of ${count} requests through the proxy ${problems.join("; ")} (pool: ${allowed.join(", ")})`);
      return seen;
    };
    const everyMember = (seen: Map<string, number>, pool: readonly string[], after: string) => {
      const missed = pool.filter((id) => !seen.has(id));
      ok(missed.length === 0, () => `${after}, no request reached ${missed.join(", ")} (reached: ${[...seen].map(([id, n]) => `${id} ${n}x`).join(", ")})`);
    };

    test("check() is ok and says what it checked, with and without the fleet", async () => {
      const f = await get();
      // Preflight passes the fleet; a proxy that knows these instances must still be ok.
      const withFleet = await f.proxy.check({ instances: f.instances });
      ok(withFleet?.ok === true, () => `check({ instances }) is not ok for the fleet the proxy serves:\n  ${withFleet?.details?.join("\n  ")}`);
      const check = await f.proxy.check();
      ok(Array.isArray(check?.details) && check.details.length > 0 && check.details.every((d) => typeof d === "string"), `check().details must be a non-empty list of strings, got ${show(check?.details)}`);
      ok(check.ok === true, () => `check() is not ok for a proxy set up for nodrop:\n  ${check.details.join("\n  ")}`);
    });

    test("name and capabilities: a string and four booleans", async () => {
      const f = await get();
      ok(typeof f.proxy.name === "string" && f.proxy.name !== "", `proxy.name must be a non-empty string, got ${show(f.proxy.name)}`);
      const caps = f.proxy.capabilities;
      for (const key of ["versionPinning", "drainsOldRouting", "timedSwitch", "affinity"] as const) {
        // Strategies plan from these: an undefined that reads as false would silently change plans.
        ok(typeof caps?.[key] === "boolean", `capabilities.${key} must be a boolean, got ${show(caps?.[key])}`);
      }
      for (const key of ["poolSlots", "backgroundDrain"] as const) {
        ok(caps?.[key] === undefined || typeof caps[key] === "boolean", `capabilities.${key} must be a boolean when set, got ${show(caps?.[key])}`);
      }
    });

    test("apply(one pool of every instance): requests reach only the pool, and each of its instances", async () => {
      const f = await get();
      const ids = all(f);
      await apply(f, singlePool(ids), "one pool of every instance");
      const after = "after apply(one pool of every instance) resolved";
      everyMember(await send(f, ids, after), ids, after);
    });

    test("apply(a pool without one instance): once it resolves, no request reaches that instance", async () => {
      const f = await get();
      const gone = removedId(f);
      const rest = all(f).filter((id) => id !== gone);
      await apply(f, singlePool(rest), `a pool without ${gone}`);
      // The engine stops the removed instance right after apply() resolves.
      const after = `after apply(a pool without ${gone}) resolved`;
      everyMember(await send(f, rest, after), rest, after);
    });

    test("current() returns the routing in force (when the adapter reads it back)", async () => {
      const f = await get();
      ok(applied !== undefined, "no routing was applied: run the checks in order");
      const current = await f.proxy.current();
      if (current === undefined) return;
      try {
        validateRouting(current, new Set(all(f)));
      } catch (error) {
        throw new ConformanceError(`current() returned an invalid routing: ${describeError(error)}`);
      }
      // Compared by what it serves: an adapter may name pools its own way when it reads them back.
      equal([...servingInstances(current)].sort(), [...servingInstances(applied)].sort(), "instances served by the routing current() returns, against those applied");
    });

    test("apply() of a routing naming an unknown instance rejects with a NodropError; the previous routing stays in force", async () => {
      const f = await get();
      ok(applied !== undefined, "no routing was applied: run the checks in order");
      const previous = applied;
      const gone = removedId(f);
      const rest = all(f).filter((id) => id !== gone);
      const bad: Routing = singlePool([...rest, UNKNOWN_ID]);
      const error = await rejects(f.proxy.apply(bad, f.instances), `apply(a pool naming "${UNKNOWN_ID}")`);
      nodropError(error, undefined, `apply(a pool naming "${UNKNOWN_ID}")`);
      const after = "after the refused apply()";
      await send(f, [...servingInstances(previous)], after);
      const current = await f.proxy.current();
      if (current !== undefined) equal([...servingInstances(current)].sort(), [...servingInstances(previous)].sort(), `instances served by current() ${after}`);
    });

    test("apply() asked to drain in the background: the new routing is in force when it resolves; `drained` settles (capability backgroundDrain) or is absent", async () => {
      const f = await get();
      const gone = all(f)[0]!;
      const rest = all(f).filter((id) => id !== gone);
      const what = `a pool without ${gone}, draining in the background`;
      const capable = f.proxy.capabilities.backgroundDrain === true;
      // Requests in flight at the change, on every instance (one each per backend, and more): the old routing drains them.
      const slowMs = 1500;
      const held = capable && f.slowRequest ? Array.from({ length: 2 * f.instances.length }, () => f.slowRequest!(slowMs).then((id) => ({ id, at: performance.now() }))) : [];
      if (held.length > 0) await new Promise((resolve) => setTimeout(resolve, 200));
      const result = await apply(f, singlePool(rest), what, true);
      if (!capable) {
        // The engine reads `drained` as "the old routing may still be in use": only an adapter that says it can may return it.
        ok(result.drained === undefined, `apply(${what}) returned \`drained\` but capabilities.backgroundDrain is not true`);
      } else {
        ok(result.drained !== undefined && typeof result.drained.then === "function", `capabilities.backgroundDrain is true but apply(${what}) returned no \`drained\` promise`);
      }
      const after = `after apply(${what}) resolved`;
      everyMember(await send(f, rest, after), rest, after);
      if (!capable) return;
      let drained: Awaited<NonNullable<ProxyApplyResult["drained"]>>;
      let drainedAt: number;
      try {
        drained = await result.drained!;
        drainedAt = performance.now();
      } catch (error) {
        throw new ConformanceError(`apply(${what}): \`drained\` rejected for a drain of requests that all finish: ${describeError(error)}`);
      }
      if (held.length > 0) {
        const answers = await Promise.all(held);
        const failed = answers.filter((a) => a.id === undefined).length;
        ok(failed === 0, `apply(${what}): ${failed} of ${answers.length} requests in flight at the change failed`);
        // The engine stops a removed instance once \`drained\` settles: a request still on its way there would be cut.
        const last = Math.max(...answers.map((a) => a.at));
        ok(drainedAt >= last - 50, () => `apply(${what}): \`drained\` settled ${Math.round(last - drainedAt)} ms before the last request in flight at the change was answered`);
      }
      ok(typeof drained?.drainMs === "number" && Number.isFinite(drained.drainMs) && drained.drainMs >= 0, `apply(${what}): \`drained\` must resolve with drainMs >= 0, got ${show(drained?.drainMs)}`);
      everyMember(await send(f, rest, `after \`drained\` settled`), rest, "after `drained` settled");
    });

    test("apply(one pool of every instance) again: the removed instance is back and each instance is reached", async () => {
      const f = await get();
      const ids = all(f);
      await apply(f, singlePool(ids), "one pool of every instance, again");
      const after = "after the pool of every instance was applied again";
      everyMember(await send(f, ids, after), ids, after);
    });
  });
}

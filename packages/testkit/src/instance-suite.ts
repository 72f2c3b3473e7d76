import { type HealthCheck, type InstanceControl, type WaitHealthyOptions, waitHealthy } from "@nodrop/core";
import { type SuiteOptions, type TestApi, registerSuite } from "./api.js";
import { ConformanceError, describeError, ok, show } from "./assert.js";

export interface InstanceFixture {
  /** The adapter under test, controlling one real instance. */
  readonly control: InstanceControl;
  /** How the engine would check that instance (e.g. core's httpHealthCheck). */
  readonly health: HealthCheck;
  /** Two versions the instance can run; it runs and is healthy on the first when setup resolves. */
  readonly versions: readonly [string, string];
  /** Stops the instance and removes what setup created. */
  cleanup(): Promise<void>;
}

export interface InstanceSuiteOptions extends SuiteOptions {
  readonly setup: () => Promise<InstanceFixture>;
  /** How waitHealthy waits for a version (default: 2 good probes in a row, every 100 ms, within 30 s). */
  readonly healthWait?: Partial<Omit<WaitHealthyOptions, "signal">> | undefined;
}

/**
 * The engine's use of an instance adapter, in its order: stop (after which the instance must
 * not answer as healthy), update to a version, start, checked by the health check, and the way
 * back, which is what a revert does. The checks run in order on one instance and build on each
 * other: run them all, in the order given.
 */
export function instanceSuite(api: TestApi, options: InstanceSuiteOptions): void {
  registerSuite(api, "nodrop instance conformance", options, ({ test, fixture }) => {
    const get = fixture(options.setup, (f) => f.cleanup());
    const wait: WaitHealthyOptions = { successes: 2, intervalMs: 100, deadlineMs: 30_000, ...options.healthWait };
    const healthyOn = async (f: InstanceFixture, version: string, after: string) => {
      try {
        await waitHealthy(f.health, f.control.spec, version, wait);
      } catch (error) {
        throw new ConformanceError(`${after}, the instance did not report ${version} healthy: ${describeError(error)}`);
      }
    };

    test("setup leaves the instance healthy on the first version; its spec names it", async () => {
      const f = await get();
      const { spec } = f.control;
      ok(typeof spec?.id === "string" && spec.id !== "", `control.spec.id must be a non-empty string, got ${show(spec?.id)}`);
      ok(typeof spec.host === "string" && spec.host !== "", `control.spec.host must be a non-empty string, got ${show(spec.host)}`);
      ok(typeof spec.address === "string" && spec.address !== "", `control.spec.address must be a non-empty string, got ${show(spec.address)}`);
      ok(Number.isInteger(spec.port) && spec.port > 0 && spec.port < 65536, `control.spec.port must be a port number, got ${show(spec.port)}`);
      ok(Array.isArray(f.versions) && f.versions.length === 2 && f.versions[0] !== f.versions[1], `versions must be two different versions, got ${show(f.versions)}`);
      await healthyOn(f, f.versions[0], "when setup resolved");
    });

    test("reach() resolves (when the adapter has it)", async () => {
      const f = await get();
      // The engine calls it once per host before the first change: a host it cannot reach stops the deploy with nothing touched.
      await f.control.reach?.({});
    });

    test("after stop() resolves, a health probe is not ok", async () => {
      const f = await get();
      await f.control.stop({ version: f.versions[0] });
      // The engine checks the instance right after start; a stop that returns before the process
      // is gone would let the old version pass the new version's check, or refuse the start.
      const probe = await f.health.probe(f.control.spec);
      ok(!probe.ok, () => `the health probe after stop() is ok (${probe.detail}); stop() must resolve only once the instance no longer serves`);
    });

    test("stop() of an instance that is already stopped resolves", async () => {
      const f = await get();
      // A revert stops an instance whatever state the failed step left it in.
      await f.control.stop({ version: f.versions[0] });
      const probe = await f.health.probe(f.control.spec);
      ok(!probe.ok, () => `the health probe after a second stop() is ok (${probe.detail})`);
    });

    test("update() to the second version and start(): the health check reports it", async () => {
      const f = await get();
      const [from, to] = f.versions;
      await f.control.update({ version: to, previous: from });
      await f.control.start({ version: to });
      await healthyOn(f, to, `after update(${to}) and start()`);
    });

    test("stop(), update() and start() back to the first version: the health check reports it", async () => {
      const f = await get();
      const [back, from] = f.versions;
      await f.control.stop({ version: from });
      const probe = await f.health.probe(f.control.spec);
      ok(!probe.ok, () => `the health probe after stop() is ok (${probe.detail})`);
      await f.control.update({ version: back, previous: from });
      await f.control.start({ version: back });
      await healthyOn(f, back, `after update(${back}) and start()`);
    });
  });
}

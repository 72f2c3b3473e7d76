import { ConformanceError } from "./assert.js";

/** A test body. Always async: every runner accepts a function returning a promise. */
export type TestFn = () => Promise<void>;

/**
 * The few functions of a test runner the suites use, passed in rather than imported, so that a
 * suite is tied to no runner:
 * - vitest, jest: `{ describe, it, beforeAll, afterAll }`
 * - node:test: `{ describe, it, beforeAll: before, afterAll: after }`
 *
 * The hooks are optional: without `beforeAll` a suite sets up on its first test; without
 * `afterAll` it cleans up in a last test of its own. Methods (not properties) on purpose: their
 * parameters are checked loosely, so the runners' richer signatures fit.
 */
export interface TestApi {
  describe(name: string, fn: () => void): unknown;
  it(name: string, fn: TestFn): unknown;
  beforeAll?(fn: TestFn): unknown;
  afterAll?(fn: TestFn): unknown;
}

/** Options every suite takes. */
export interface SuiteOptions {
  /** Names the adapter or strategy under test in the suite's title. */
  readonly name: string;
  /**
   * Checks known to fail, by their exact title, with the reason (an issue link): each still runs,
   * passes while it fails, and fails once it passes, so the entry is removed when the bug is fixed.
   * A title that matches no check is an error.
   */
  readonly knownFailures?: Readonly<Record<string, string>>;
}

export interface Registrar {
  /** Registers one check. */
  test(title: string, fn: TestFn): void;
  /** A value set up once for the suite and cleaned up after its last check. */
  fixture<T>(setup: () => Promise<T>, cleanup: (value: T) => Promise<void>): () => Promise<T>;
}

/** Registers a suite: a describe block whose checks honor `knownFailures` and whose fixtures are cleaned up. */
export function registerSuite(api: TestApi, title: string, options: SuiteOptions, body: (r: Registrar) => void): void {
  api.describe(`${title}: ${options.name}`, () => {
    const known = options.knownFailures ?? {};
    const titles = new Set<string>();
    const cleanups: TestFn[] = [];
    const registrar: Registrar = {
      test(testTitle, fn) {
        titles.add(testTitle);
        const reason = known[testTitle];
        if (reason === undefined) {
          api.it(testTitle, fn);
          return;
        }
        api.it(`${testTitle} [known failure: ${reason}]`, async () => {
          try {
            await fn();
          } catch {
            return;
          }
          throw new ConformanceError(`"${testTitle}" passes now, but knownFailures lists it (${reason}): remove it from knownFailures`);
        });
      },
      fixture(setup, cleanup) {
        let value: ReturnType<typeof setup> | undefined;
        const get = () => (value ??= setup());
        if (api.beforeAll) api.beforeAll(async () => void (await get()));
        cleanups.push(async () => {
          if (value === undefined) return;
          // A setup that failed cleaned up after itself (or had nothing to clean).
          const settled = await value.then(
            (v) => ({ ok: true as const, v }),
            () => ({ ok: false as const }),
          );
          value = undefined;
          if (settled.ok) await cleanup(settled.v);
        });
        return get;
      },
    };
    body(registrar);
    const unknown = Object.keys(known).filter((t) => !titles.has(t));
    if (unknown.length > 0) {
      throw new ConformanceError(`${title}: knownFailures names no check of this suite: ${unknown.map((t) => JSON.stringify(t)).join(", ")} (titles: ${[...titles].map((t) => JSON.stringify(t)).join(", ")})`);
    }
    const cleanupAll: TestFn = async () => {
      // Last registered, first cleaned; every cleanup runs even when one fails.
      const errors: unknown[] = [];
      for (const cleanup of cleanups.reverse()) await cleanup().catch((error: unknown) => errors.push(error));
      if (errors.length > 0) throw errors[0];
    };
    if (cleanups.length === 0) return;
    if (api.afterAll) api.afterAll(cleanupAll);
    else api.it("cleanup", cleanupAll);
  });
}

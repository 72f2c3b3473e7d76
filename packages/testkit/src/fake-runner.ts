import type { TestApi, TestFn } from "./api.js";

// For this package's own tests (not exported): a minimal runner that collects what a suite
// registers and runs it, so a test can assert which checks a deliberately broken adapter fails.

export interface CheckResult {
  readonly title: string;
  /** The error message when the check failed. */
  readonly error: string | undefined;
}

export interface RunOptions {
  /** Leave out beforeAll/afterAll, as a runner without hooks would. */
  readonly withoutHooks?: boolean;
}

export async function runSuite(register: (api: TestApi) => void, options: RunOptions = {}): Promise<CheckResult[]> {
  const tests: { title: string; fn: TestFn }[] = [];
  const before: TestFn[] = [];
  const after: TestFn[] = [];
  const api: TestApi = {
    describe: (_name, fn) => fn(),
    it: (title, fn) => tests.push({ title, fn }),
    ...(options.withoutHooks ? {} : { beforeAll: (fn: TestFn) => before.push(fn), afterAll: (fn: TestFn) => after.push(fn) }),
  };
  register(api);
  const results: CheckResult[] = [];
  let setupError: string | undefined;
  for (const fn of before) await fn().catch((error: unknown) => (setupError ??= String(error)));
  for (const test of tests) {
    if (setupError !== undefined) {
      results.push({ title: test.title, error: `setup failed: ${setupError}` });
      continue;
    }
    try {
      await test.fn();
      results.push({ title: test.title, error: undefined });
    } catch (error) {
      results.push({ title: test.title, error: error instanceof Error ? error.message : String(error) });
    }
  }
  for (const fn of after) await fn();
  return results;
}

/** Titles of the failed checks. */
export function failed(results: readonly CheckResult[]): string[] {
  return results.filter((r) => r.error !== undefined).map((r) => r.title);
}

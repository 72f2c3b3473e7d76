import type * as nodeTest from "node:test";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestApi } from "./api.js";

// Compile-time checks (run by `tsc`, pnpm typecheck): the runners' own functions fit TestApi as
// they are, without casts.
const fromVitest: TestApi = { describe, it, beforeAll, afterAll };
type NodeTestFunctions = { describe: typeof nodeTest.describe; it: typeof nodeTest.it; before: typeof nodeTest.before; after: typeof nodeTest.after };
const fromNodeTest = (t: NodeTestFunctions): TestApi => ({ describe: t.describe, it: t.it, beforeAll: t.before, afterAll: t.after });
const withoutHooks = (t: NodeTestFunctions): TestApi => ({ describe: t.describe, it: t.it });

describe("TestApi", () => {
  it("takes vitest's and node:test's functions as they are", () => {
    expect(typeof fromVitest.it).toBe("function");
    expect(typeof fromNodeTest).toBe("function");
    expect(typeof withoutHooks).toBe("function");
  });
});

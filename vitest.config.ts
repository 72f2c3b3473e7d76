import { readFileSync } from "node:fs";
import { defineConfig } from "vitest/config";

// Core's sources read their version from this constant, which its build compiles in (tsup.config.ts).
const coreVersion = JSON.stringify(JSON.parse(readFileSync(new URL("./packages/core/package.json", import.meta.url), "utf8")).version);

// Two projects: pure unit tests, then the tests that start real nginx, gunicorn and sshd, two files
// at a time. Most of an integration file's time is spent waiting (drains, graceful stops, health
// deadlines), so two side by side fill a 2-core machine without starving either. Each file has
// ports of its own and test hosts claim a subnet of their own (testhosts' claimNet), so any two can
// run together. `pnpm test --maxWorkers=1` runs them one at a time.
export default defineConfig({
  define: { __NODROP_CORE_VERSION__: coreVersion },
  test: {
    // Sums the adversarial suite's tally (tests/adversarial/tally.ts) over every file.
    globalSetup: ["tests/adversarial/global-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          sequence: { groupOrder: 0 },
          include: ["packages/*/src/**/*.test.ts", "actions/*/src/**/*.test.ts", "examples/*/src/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "actions/*/test/**/*.test.ts", "tests/**/*.test.ts"],
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});

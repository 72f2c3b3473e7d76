import { readFileSync } from "node:fs";
import { defineConfig } from "vitest/config";

// Core's sources read their version from this constant, which its build compiles in (tsup.config.ts).
const coreVersion = JSON.stringify(JSON.parse(readFileSync(new URL("./packages/core/package.json", import.meta.url), "utf8")).version);

// Two projects: pure unit tests run in parallel; tests that start real nginx, gunicorn and sshd
// run one file at a time, because this machine has 2 cores and they put it under load.
export default defineConfig({
  define: { __NODROP_CORE_VERSION__: coreVersion },
  test: {
    // Sums the adversarial suite's tally (tests/adversarial/tally.ts) over every file.
    globalSetup: ["tests/adversarial/global-setup.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["packages/*/src/**/*.test.ts", "actions/*/src/**/*.test.ts", "examples/*/src/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "actions/*/test/**/*.test.ts", "tests/**/*.test.ts"],
          fileParallelism: false,
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});

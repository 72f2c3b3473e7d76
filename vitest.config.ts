import { readFileSync } from "node:fs";
import { defineConfig } from "vitest/config";

// Core's sources read their version from this constant, which its build compiles in (tsup.config.ts).
const coreVersion = JSON.stringify(JSON.parse(readFileSync(new URL("./packages/core/package.json", import.meta.url), "utf8")).version);

// Two projects: pure unit tests, then the tests that start real nginx, gunicorn and sshd, two files
// at a time. Most of an integration file's time is spent waiting (drains, graceful stops, health
// deadlines), so two side by side fill a 2-core machine without starving either. Each file has
// ports of its own and test hosts claim a subnet of their own (testhosts' claimNet), so any two can
// run together. Files whose assertions hang on timing that another file's load would skew run
// alone, after the others (`alone` below). `pnpm test --maxWorkers=1` runs every file one at a time.
const integration = ["packages/*/test/**/*.test.ts", "examples/*/test/**/*.test.ts", "actions/*/test/**/*.test.ts", "tests/**/*.test.ts"];
// The timed switch on a slow-parsing nginx: it asserts that the instant nginx picked from its own
// parse times was late enough, which a second file's CPU use at that moment would make false.
const alone = ["packages/nginx/test/switch-timing.test.ts"];

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
          include: integration,
          exclude: [...alone, "**/node_modules/**"],
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          name: "integration-alone",
          include: alone,
          maxWorkers: 1,
          sequence: { groupOrder: 2 },
          testTimeout: 240_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});

import { defineConfig } from "vitest/config";

// Two projects: pure unit tests run in parallel; tests that start real nginx, gunicorn and sshd
// run one file at a time, because this machine has 2 cores and they put it under load.
export default defineConfig({
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

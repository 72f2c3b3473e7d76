import { defineConfig } from "vitest/config";

// Two projects: pure unit tests run in parallel; tests that start real nginx, gunicorn and sshd
// run one file at a time, because this machine has 2 cores and they put it under load.
export default defineConfig({
  test: {
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

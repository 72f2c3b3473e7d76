// The suites take the runner's functions as arguments: this runs two of them under node:test
// (a separate `node --test` process, importing the built package as a user would).
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));

describe("under node:test", () => {
  it("strategySuite and executorSuite run and pass", async () => {
    const { stdout } = await run(process.execPath, ["--test", "--test-reporter=tap", path.join(here, "fixtures", "node-test-runner.mjs")], {
      cwd: path.resolve(here, ".."),
      timeout: 120_000,
    });
    const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(stdout)?.[1]);
    // 11 strategy checks + 7 executor checks, inside 2 suites (node:test counts suites as tests too).
    expect({ pass: count("pass"), fail: count("fail"), suites: count("suites") }).toEqual({ pass: 18, fail: 0, suites: 2 });
    expect(stdout).toContain("ok 1 - plan() is synchronous, returns the same plan for the same input and leaves its input unchanged");
  });
});

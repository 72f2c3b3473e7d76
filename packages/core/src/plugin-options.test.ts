// Plugin options validated with core's schema or any Standard Schema validator (zod 4, valibot),
// each problem at its config path.
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import type { ConfigIssue } from "./errors.js";
import { validateOptions } from "./plugin-options.js";
import { int, list, object, optional, str } from "./schema.js";
import { formatIssuePath, isStandardSchema } from "./standard-schema.js";

const check = async (schema: Parameters<typeof validateOptions>[0], value: unknown) => {
  const issues: ConfigIssue[] = [];
  const parsed = await validateOptions(schema, value, "strategy", issues);
  return { parsed, issues: issues.map((i) => `${i.path}: ${i.message}`) };
};

const zodSteps = z.object({ steps: z.array(z.object({ weight: z.number().int().min(1).max(100) })).min(1), pause: z.string().optional() }).strict();
const valibotSteps = v.strictObject({ steps: v.pipe(v.array(v.object({ weight: v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(100)) })), v.minLength(1)) });
const coreSteps = object({ steps: list(object({ weight: int({ min: 1, max: 100 }) }), { min: 1 }), pause: optional(str()) });

describe("validateOptions", () => {
  it("zod 4: the parsed value, or each issue at its path (strategy.steps[1].weight)", async () => {
    expect(await check(zodSteps, { steps: [{ weight: 10 }] })).toEqual({ parsed: { steps: [{ weight: 10 }] }, issues: [] });
    const bad = await check(zodSteps, { steps: [{ weight: 10 }, { weight: 0 }], extra: true });
    expect(bad.parsed).toBeUndefined();
    expect(bad.issues).toHaveLength(2);
    expect(bad.issues[0]).toMatch(/^strategy\.steps\[1\]\.weight: /);
    expect(bad.issues[1]).toMatch(/^strategy: .*extra/);
  });

  it("valibot: the same paths", async () => {
    const bad = await check(valibotSteps, { steps: [{ weight: 5 }, { weight: 500 }] });
    expect(bad.parsed).toBeUndefined();
    expect(bad.issues).toEqual([expect.stringMatching(/^strategy\.steps\[1\]\.weight: /)]);
    expect((await check(valibotSteps, { steps: [{ weight: 5 }] })).parsed).toEqual({ steps: [{ weight: 5 }] });
  });

  it("core's schema: its own messages, and it is a Standard Schema too", async () => {
    expect((await check(coreSteps, { steps: [{ weight: 5 }, { weight: 0 }] })).issues).toEqual(["strategy.steps[1].weight: expected an integer 1-100, got number 0"]);
    expect(isStandardSchema(coreSteps)).toBe(true);
    const result = await coreSteps["~standard"].validate({ steps: [{ weight: 5 }, { weight: "x" }], nope: 1 });
    expect(result.issues?.map((i) => [i.path, i.message])).toEqual([
      [["nope"], "unknown key (known keys: steps, pause)"],
      [["steps", 1, "weight"], 'expected an integer 1-100, got string "x"'],
    ]);
    expect(await coreSteps["~standard"].validate({ steps: [{ weight: 5 }] })).toEqual({ value: { steps: [{ weight: 5 }] } });
  });

  it("a validator that throws, or refuses without an issue, is a problem at the section's path", async () => {
    const throwing = { "~standard": { version: 1 as const, vendor: "x", validate: () => { throw new Error("boom"); } } };
    expect((await check(throwing, {})).issues).toEqual(["strategy: the options validator threw: boom"]);
    const silent = { "~standard": { version: 1 as const, vendor: "x", validate: async () => ({ issues: [] }) } };
    expect((await check(silent, {})).issues).toEqual(["strategy: the options validator refused the options without saying why"]);
  });

  it("formats paths as configs are written", () => {
    expect(formatIssuePath("strategy", ["steps", 1, { key: "weight" }])).toBe("strategy.steps[1].weight");
    expect(formatIssuePath("", ["labels", "app.kubernetes.io"])).toBe('labels["app.kubernetes.io"]');
    expect(formatIssuePath("proxy", undefined)).toBe("proxy");
  });
});

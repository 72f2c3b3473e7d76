import type { ConfigIssue } from "./errors.js";
import type { OptionsSchema } from "./plugin.js";
import { formatIssuePath, isStandardSchema } from "./standard-schema.js";

/**
 * Validates a plugin's options with its schema, core's or a Standard Schema one, recording each
 * problem at its config path (`strategy.steps[1].weight`). Resolves with the parsed options, or
 * undefined when there was a problem.
 */
export async function validateOptions<T>(schema: OptionsSchema<T>, value: unknown, path: string, issues: ConfigIssue[]): Promise<T | undefined> {
  // Core's own schemas by their own parse (they are Standard Schemas too, vendor "nodrop"): the
  // same messages as the rest of the config. zod's schemas have a parse() of another kind.
  if (!isStandardSchema(schema) || schema["~standard"].vendor === "nodrop") {
    const before = issues.length;
    const parsed = (schema as Extract<OptionsSchema<T>, { parse: unknown }>).parse(value, path, issues);
    return issues.length === before ? parsed : undefined;
  }
  let result: Awaited<ReturnType<typeof schema["~standard"]["validate"]>>;
  try {
    result = await schema["~standard"].validate(value);
  } catch (error) {
    issues.push({ path, message: `the options validator threw: ${error instanceof Error ? error.message : String(error)}` });
    return undefined;
  }
  if (result.issues) {
    for (const issue of result.issues) issues.push({ path: formatIssuePath(path, issue.path) || "(top level)", message: String(issue.message) });
    if (result.issues.length === 0) issues.push({ path, message: "the options validator refused the options without saying why" });
    return undefined;
  }
  return result.value;
}

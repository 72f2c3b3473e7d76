// The example workflows (and the workflow snippets in the docs) are copied into users'
// repositories: none may expand an expression inside a `run:` script, where the runner pastes a
// value such as an output, an input or a ref name into the script before the shell reads it
// (script injection). Values reach scripts through `env:` and are read there as "$NAME".
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const workflowsDir = path.join(root, "examples", "workflows");

interface Step {
  run?: unknown;
  env?: Record<string, unknown>;
}

/** Every mapping with a `run:` (a step), wherever it sits: jobs.*.steps[], or a bare list of steps in a snippet. */
function steps(where: string, node: unknown): { where: string; step: Step }[] {
  if (Array.isArray(node)) return node.flatMap((item, i) => steps(`${where}[${i}]`, item));
  if (typeof node !== "object" || node === null) return [];
  const own = "run" in node ? [{ where, step: node as Step }] : [];
  return [...own, ...Object.entries(node).flatMap(([key, value]) => steps(`${where}.${key}`, value))];
}

/** Where a `run:` script expands an expression. */
function injectedRuns(where: string, text: string): string[] {
  return steps(where, parse(text))
    .filter(({ step }) => typeof step.run === "string" && step.run.includes("${{"))
    .map(({ where: at }) => at);
}

const workflows = readdirSync(workflowsDir)
  .filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"))
  .map((file) => ({ where: file, text: readFileSync(path.join(workflowsDir, file), "utf8") }));

/** The ```yaml blocks of the docs that hold steps (workflows or lists of steps). */
const snippets = ["README.md", "actions/deploy/README.md", ...readdirSync(path.join(root, "docs", "guides")).map((f) => `docs/guides/${f}`)]
  .filter((file) => file.endsWith(".md"))
  .flatMap((file) =>
    [...readFileSync(path.join(root, file), "utf8").matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)].map((m, i) => ({ where: `${file} yaml block ${i + 1}`, text: m[1]! })),
  )
  .filter(({ text }) => /^\s*(-\s+)?run:/m.test(text));

describe("example workflows and the docs' workflow snippets", () => {
  it("are all found and parsed: each workflow has steps, and the GitHub Action guide has step snippets", () => {
    expect(workflows.map((f) => f.where)).toEqual(expect.arrayContaining(["deploy-on-push.yml", "manual-deploy.yml", "multi-host.yml"]));
    for (const { where, text } of workflows) {
      const jobs = (parse(text) as { jobs?: Record<string, { steps?: unknown[] }> }).jobs ?? {};
      expect(Object.values(jobs).flatMap((job) => job.steps ?? []).length, where).toBeGreaterThan(0);
    }
    expect(snippets.filter((s) => s.where.startsWith("docs/guides/github-action.md")).length).toBeGreaterThanOrEqual(2);
  });

  it("the check finds an expression in a run: script (as multi-host.yml once had), in a workflow or a bare list of steps", () => {
    const unsafe = "jobs:\n  deploy:\n    steps:\n      - uses: actions/checkout@v5\n      - if: failure()\n        run: echo '${{ steps.nodrop.outputs.instances }}' | jq .\n";
    expect(injectedRuns("unsafe.yml", unsafe)).toEqual(["unsafe.yml.jobs.deploy.steps[1]"]);
    expect(injectedRuns("snippet", "- run: |\n    echo ok\n    echo \"${{ github.head_ref }}\"\n")).toEqual(["snippet[0]"]);
    const safe = "jobs:\n  deploy:\n    steps:\n      - env:\n          INSTANCES: ${{ steps.nodrop.outputs.instances }}\n        run: echo \"$INSTANCES\" | jq .\n";
    expect(injectedRuns("safe.yml", safe)).toEqual([]);
  });

  it("no run: script in an example workflow expands ${{ }}", () => {
    expect(workflows.flatMap(({ where, text }) => injectedRuns(where, text))).toEqual([]);
  });

  it("no run: script in the docs' snippets expands ${{ }}", () => {
    expect(snippets.flatMap(({ where, text }) => injectedRuns(where, text))).toEqual([]);
  });

  it("a value a step passes through env: is read in its script as $NAME", () => {
    for (const { where, text } of [...workflows, ...snippets]) {
      for (const { where: at, step } of steps(where, parse(text))) {
        if (typeof step.run !== "string") continue;
        for (const [name, value] of Object.entries(step.env ?? {})) {
          if (typeof value === "string" && value.includes("${{")) expect(step.run, `${at}: env ${name}`).toMatch(new RegExp(`\\$\\{?${name}\\b`));
        }
      }
    }
  });
});

describe("the example workflows' nodrop steps", () => {
  const inputs = Object.keys((parse(readFileSync(path.join(root, "actions", "deploy", "action.yml"), "utf8")) as { inputs: Record<string, unknown> }).inputs);
  /** Every step that uses the deploy action, with its `with:` keys. */
  const nodropSteps = workflows.flatMap(({ where, text }) => {
    const jobs = (parse(text) as { jobs?: Record<string, { steps?: { uses?: string; with?: Record<string, unknown> }[] }> }).jobs ?? {};
    return Object.values(jobs).flatMap((job) => (job.steps ?? []).filter((s) => s.uses?.startsWith("nodrop/nodrop/actions/deploy@")).map((s) => ({ where, keys: Object.keys(s.with ?? {}) })));
  });

  it("pass only inputs the action has (a misspelt one would be ignored by the runner, with a warning)", () => {
    expect(nodropSteps.length).toBeGreaterThanOrEqual(workflows.length);
    for (const { where, keys } of nodropSteps) for (const key of keys) expect(inputs, `${where}: ${key}`).toContain(key);
    expect(nodropSteps.some((s) => s.keys.includes("artifact"))).toBe(true);
  });
});

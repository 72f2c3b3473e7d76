import { configSchema, schema } from "@nodrop/core";
import { builtInPlugins } from "./builtins.js";

const HEADER = `# Configuration reference

Generated from the schemas in the code (\`pnpm run docs\`); a test fails when this file and the code disagree.
Durations are written like \`500ms\`, \`30s\` or \`2m\`. Unknown keys are errors.

`;

function rows(title: string, intro: string, target: schema.Schema<unknown>, prefix: string): string {
  const lines = [`## ${title}`, "", intro, "", "| key | required | accepts | default | meaning |", "|---|---|---|---|---|"];
  for (const row of schema.documentSchema(target, prefix)) {
    const cell = (text: string) => text.replaceAll("|", "\\|");
    lines.push(`| \`${row.path}\` | ${row.required ? "yes" : "no"} | ${cell(row.type)} | ${row.default === undefined ? "" : `\`${cell(row.default)}\``} | ${cell(row.doc)} |`);
  }
  return `${lines.join("\n")}\n`;
}

/** The config reference in Markdown, from the same schemas that validate configs. */
export function configReference(): string {
  const parts = [HEADER, rows("Top level", "The file nodrop reads (`--config`).", configSchema, "")];
  for (const [name, plugin] of Object.entries(builtInPlugins.proxy)) {
    parts.push(rows(`proxy (use: ${name})`, `\`proxy.use: ${name}\` and \`proxy.host\` (default \`local\`), then:`, plugin.optionsSchema as schema.Schema<unknown>, "proxy"));
  }
  for (const [name, plugin] of Object.entries(builtInPlugins.strategy)) {
    parts.push(rows(`strategy (use: ${name})`, `\`strategy.use: ${name}\`, then:`, plugin.optionsSchema as schema.Schema<unknown>, "strategy"));
  }
  return parts.join("\n");
}

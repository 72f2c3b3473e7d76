import { NodropError } from "./errors.js";

/** The placeholders a command template may use. */
export const PLACEHOLDERS = ["version", "previous", "host", "address", "port", "id"] as const;
export type Placeholder = (typeof PLACEHOLDERS)[number];
export type TemplateValues = Partial<Record<Placeholder, string | number>>;

const TOKEN = /\{\{|\}\}|\{([a-z]+)\}|[{}]/g;

/** Versions, ids and host names must be boring: they end up in shell commands and nginx config. */
export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Quotes a value for a POSIX shell. Plain words stay readable; anything else is
 * single-quoted, which the shell never expands.
 */
export function shellQuote(value: string | number): string {
  const text = String(value);
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** Returns the problems with a template (unknown placeholders, stray braces); empty when valid. */
export function checkTemplate(template: string): string[] {
  const problems: string[] = [];
  for (const match of template.matchAll(TOKEN)) {
    const [token, name] = match;
    if (token === "{{" || token === "}}") continue;
    if (name === undefined) problems.push(`stray "${token}" at ${match.index} (write {{ or }} for a literal brace)`);
    else if (!(PLACEHOLDERS as readonly string[]).includes(name)) {
      problems.push(`unknown placeholder {${name}} (known: ${PLACEHOLDERS.map((p) => `{${p}}`).join(", ")})`);
    }
  }
  return problems;
}

/** Fills a template; every value is shell-quoted, so no value can change the command's shape. */
export function renderTemplate(template: string, values: TemplateValues, what = "command"): string {
  const problems = checkTemplate(template);
  if (problems.length > 0) throw new NodropError("E_TEMPLATE", `${what}: ${problems.join("; ")}`);
  return template.replace(TOKEN, (token, name: string | undefined) => {
    if (token === "{{") return "{";
    if (token === "}}") return "}";
    const value = values[name as Placeholder];
    if (value === undefined || value === "") {
      throw new NodropError("E_TEMPLATE", `${what}: placeholder {${name}} has no value here`);
    }
    return shellQuote(value);
  });
}

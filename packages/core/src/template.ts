import { isIP } from "node:net";
import { NodropError } from "./errors.js";

/** The placeholders a command template may use. */
export const PLACEHOLDERS = ["version", "previous", "host", "address", "port", "id", "release"] as const;
export type Placeholder = (typeof PLACEHOLDERS)[number];
export type TemplateValues = Partial<Record<Placeholder, string | number>>;
/** Where each value came from ("config", "--version", "the journal", "instance web-1"), for errors. */
export type TemplateSources = Partial<Record<Placeholder, string>>;

const TOKEN = /\{\{|\}\}|\{([a-z]+)\}|[{}]/g;

/** An absolute path of plain characters, without `..` (a release directory, the state directory). */
export const PLAIN_ABSOLUTE_PATH = /^(?!.*(?:^|\/)\.\.(?:\/|$))\/[A-Za-z0-9._\/@+-]*$/;

/** Versions, ids and host names must be boring: they end up in shell commands and nginx config. */
export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Whether a value is a safe version string (or id, or host name): SAFE_NAME, nothing else. */
export function isSafeName(value: unknown): value is string {
  return typeof value === "string" && SAFE_NAME.test(value);
}

/**
 * Shows a value that nodrop did not produce (an instance's header, a journal line) in a message:
 * JSON-escaped, so control characters, quotes and newlines stay visible and inert, and cut short.
 */
export function describeValue(value: unknown, max = 60): string {
  const text = typeof value === "string" ? value : typeof value === "number" ? String(value) : value === undefined ? "undefined" : (JSON.stringify(value) ?? String(value));
  const cut = text.length > max ? `${text.slice(0, max)}…` : text;
  return JSON.stringify(cut);
}

/**
 * A line of text a plugin wrote for people (an adapter's warning): kept readable, but with control
 * and direction characters shown as "?" (it cannot move the cursor, or start a line of its own
 * that forges a log line or a workflow command), and cut short.
 */
export function inertLine(value: unknown, max = 500): string {
  const text = typeof value === "string" ? value : describeValue(value, max);
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, "?");
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

const nameRule = (value: string) => (SAFE_NAME.test(value) ? undefined : "letters, digits, '.', '_' or '-' (at most 128, starting with a letter or digit)");
/** What each placeholder accepts; anything else is refused when the command is rendered. */
const RULES: Record<Placeholder, (value: string) => string | undefined> = {
  version: nameRule,
  previous: nameRule,
  id: nameRule,
  host: nameRule,
  address: (value) => (isIP(value) !== 0 ? undefined : "an IP address"),
  port: (value) => (/^[1-9][0-9]{0,4}$/.test(value) && Number(value) <= 65535 ? undefined : "an integer 1-65535"),
  release: (value) => (PLAIN_ABSOLUTE_PATH.test(value) && value !== "/" ? undefined : "an absolute path of plain characters without .."),
};

/** Why a placeholder's value is refused, or undefined when it is fine. */
export function placeholderProblem(name: Placeholder, value: string | number): string | undefined {
  if (typeof value !== "string" && typeof value !== "number") return `expected a string or a number, got ${typeof value}`;
  const text = String(value);
  // A value that a command could read as an option (`--upload-pack=...`) is refused whatever its rule.
  if (text.startsWith("-")) return `${describeValue(text)} starts with "-" (a command could read it as an option)`;
  const rule = RULES[name](text);
  return rule === undefined ? undefined : `${describeValue(text)} is not ${rule}`;
}

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

/**
 * Fills a template. Every value is checked against its placeholder's rule at this point, whatever
 * its source (config, command line, journal, an instance, a plugin), then shell-quoted, so no value
 * can change the command's shape or be read as an option.
 */
export function renderTemplate(template: string, values: TemplateValues, what = "command", sources: TemplateSources = {}): string {
  const problems = checkTemplate(template);
  if (problems.length > 0) throw new NodropError("E_TEMPLATE", `${what}: ${problems.join("; ")}`);
  return template.replace(TOKEN, (token, name: string | undefined) => {
    if (token === "{{") return "{";
    if (token === "}}") return "}";
    const placeholder = name as Placeholder;
    const value = Object.hasOwn(values, placeholder) ? values[placeholder] : undefined;
    if (value === undefined || value === "") {
      throw new NodropError("E_TEMPLATE", `${what}: placeholder {${name}} has no value here`);
    }
    const problem = placeholderProblem(placeholder, value);
    if (problem) {
      const source = Object.hasOwn(sources, placeholder) ? sources[placeholder] : undefined;
      throw new NodropError("E_TEMPLATE", `${what}: refusing to run it: placeholder {${name}}${source ? ` (from ${source})` : ""}: ${problem}`);
    }
    return shellQuote(value);
  });
}

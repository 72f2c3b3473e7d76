import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { checkTemplate, renderTemplate, SAFE_NAME, shellQuote } from "./template.js";
import { thrown } from "./test-support.js";

const bash = (script: string) => execFileSync("bash", ["-c", script], { encoding: "utf8" });


describe("shellQuote", () => {
  it("leaves plain words alone", () => {
    for (const word of ["v1.2.3", "web-8011", "127.0.0.1", "::1", "a_b", "user@host", "k=v", "50%", "a+b,c", "/srv/app"]) {
      expect(shellQuote(word)).toBe(word);
    }
    expect(shellQuote(8011)).toBe("8011");
  });

  it("single-quotes anything else", () => {
    expect(shellQuote("a b")).toBe("'a b'");
    expect(shellQuote("")).toBe("''");
    expect(shellQuote("$(id)")).toBe("'$(id)'");
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
    expect(shellQuote("~root")).toBe("'~root'");
    expect(shellQuote("*")).toBe("'*'");
  });
});

describe("renderTemplate", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "nodrop-template-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("fills every placeholder, quoted", () => {
    const rendered = renderTemplate("run {id} {host} {address} {port} {version} {previous}", {
      id: "web-8011",
      host: "local",
      address: "::1",
      port: 8011,
      version: "v2",
      previous: "v 1",
    });
    expect(rendered).toBe("run web-8011 local ::1 8011 v2 'v 1'");
  });

  it("repeats a placeholder as often as it is used", () => {
    expect(renderTemplate("{port}:{port}", { port: 80 })).toBe("80:80");
  });

  const marker = path.join(dir, "pwned");
  const hostile = [
    `v1; touch ${marker}`,
    `$(touch ${marker})`,
    `\`touch ${marker}\``,
    "it's a 'quoted' value",
    "line one\nline two; touch " + marker,
    "a && touch " + marker + " || true",
    "$HOME ${PATH} * ? [a] ~",
    "tab\there | cat > " + marker,
    "'",
    "\\",
    "--flag",
  ];

  it.each(hostile)("passes %j to bash as one literal argument", (value) => {
    const rendered = renderTemplate("printf '%s\\n' {version}", { version: value });
    expect(bash(rendered)).toBe(`${value}\n`);
    // One argument: printf with one %s per argument would print one line per extra argument.
    expect(bash(`${renderTemplate("set -- {version}", { version: value })}; printf '%s' "$#"`)).toBe("1");
    expect(existsSync(marker)).toBe(false);
  });

  it("unknown placeholders throw E_TEMPLATE and name the template", () => {
    const error = thrown(() => renderTemplate("./stop {verison}", { version: "v1" }, "commands.stop"));
    expect(error.code).toBe("E_TEMPLATE");
    expect(error.message).toContain("commands.stop: unknown placeholder {verison}");
  });

  it("stray braces throw E_TEMPLATE", () => {
    expect(thrown(() => renderTemplate("echo {", {})).code).toBe("E_TEMPLATE");
    expect(thrown(() => renderTemplate("echo }", {})).code).toBe("E_TEMPLATE");
    expect(thrown(() => renderTemplate("echo {Version}", { version: "v1" })).code).toBe("E_TEMPLATE");
  });

  it("a missing or empty value throws E_TEMPLATE naming the placeholder", () => {
    const missing = thrown(() => renderTemplate("./update {version} {previous}", { version: "v2" }, "commands.update"));
    expect(missing.code).toBe("E_TEMPLATE");
    expect(missing.message).toBe("commands.update: placeholder {previous} has no value here");
    const empty = thrown(() => renderTemplate("./update {version}", { version: "" }));
    expect(empty.code).toBe("E_TEMPLATE");
    expect(empty.message).toContain("{version}");
  });

  it("{{ and }} are literal braces and never placeholders", () => {
    expect(renderTemplate("awk '{{print $1}}' {port}", { port: 1 })).toBe("awk '{print $1}' 1");
    expect(renderTemplate("echo {{version}}", {})).toBe("echo {version}");
    expect(bash(renderTemplate("echo {{a,b}}", {}))).toBe("a b\n");
  });
});

describe("checkTemplate", () => {
  it("returns nothing for a valid template", () => {
    expect(checkTemplate("./deploy {version} {{x}} {previous}")).toEqual([]);
  });

  it("returns one problem per bad token", () => {
    const problems = checkTemplate("{nope} { {port} }");
    expect(problems).toHaveLength(3);
    expect(problems[0]).toContain("unknown placeholder {nope}");
    expect(problems[1]).toBe('stray "{" at 7 (write {{ or }} for a literal brace)');
    expect(problems[2]).toBe('stray "}" at 16 (write {{ or }} for a literal brace)');
  });
});

describe("SAFE_NAME", () => {
  it("accepts boring names only", () => {
    for (const ok of ["web", "v1.2.3", "a_b-c", "9lives"]) expect(SAFE_NAME.test(ok)).toBe(true);
    for (const bad of ["", "-x", ".x", "a b", "a;b", "a\n", "a'b", "a/b", "x".repeat(129)]) expect(SAFE_NAME.test(bad)).toBe(false);
    expect(SAFE_NAME.test("x".repeat(128))).toBe(true);
  });
});

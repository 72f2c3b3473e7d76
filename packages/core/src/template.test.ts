import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import { PLACEHOLDERS, checkTemplate, describeValue, isSafeName, renderTemplate, SAFE_NAME, shellQuote } from "./template.js";
import { thrown } from "./test-support.js";

const bash = (script: string) => execFileSync("bash", ["-c", script], { encoding: "utf8" });


describe("describeValue and isSafeName", () => {
  it("shows untrusted text escaped and cut short", () => {
    expect(describeValue("v1'; touch /tmp/x; echo '")).toBe(JSON.stringify("v1'; touch /tmp/x; echo '"));
    expect(describeValue("a\r\nSet-Cookie: x")).toBe('"a\\r\\nSet-Cookie: x"');
    expect(describeValue("\u001b[31mred")).toBe('"\\u001b[31mred"');
    expect(describeValue("x".repeat(100), 10)).toBe(`"${"x".repeat(10)}…"`);
  });

  it("isSafeName is SAFE_NAME for strings and false for anything else", () => {
    expect(isSafeName("v1.2")).toBe(true);
    for (const bad of [undefined, null, 1, ["v1"], { v: 1 }, "", "-v1", "__proto__", "v1\n"]) expect(isSafeName(bad)).toBe(false);
  });
});

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

  it("fills every placeholder", () => {
    const rendered = renderTemplate("run {id} {host} {address} {port} {version} {previous}", {
      id: "web-8011",
      host: "local",
      address: "::1",
      port: 8011,
      version: "v2",
      previous: "v1.9_rc-1",
    });
    expect(rendered).toBe("run web-8011 local ::1 8011 v2 v1.9_rc-1");
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
    "--upload-pack=touch " + marker,
    "-x",
    "v1\u0000",
    "v\u0430", // Cyrillic a, looks like "va"
    "x".repeat(129),
  ];

  it.each(hostile)("refuses %j in every placeholder, naming it and the command, and runs nothing", (value) => {
    for (const name of PLACEHOLDERS) {
      const error = thrown(() => renderTemplate(`printf '%s\\n' {${name}}`, { [name]: value }, "commands.update", { [name]: "the journal" }));
      expect(error.code).toBe("E_TEMPLATE");
      expect(error.message).toContain(`commands.update: refusing to run it: placeholder {${name}} (from the journal): `);
      // The value is shown escaped (JSON) and cut short: never raw.
      expect(error.message).not.toContain("\n");
      expect(error.message.length).toBeLessThan(300);
    }
    expect(existsSync(marker)).toBe(false);
  });

  it("shellQuote passes hostile text to bash as one literal argument", () => {
    for (const value of hostile.filter((v) => !v.includes("\u0000"))) {
      expect(bash(`printf '%s\\n' ${shellQuote(value)}`)).toBe(`${value}\n`);
      expect(bash(`set -- ${shellQuote(value)}; printf '%s' "$#"`)).toBe("1");
    }
    expect(existsSync(marker)).toBe(false);
  });

  it("a value starting with - is refused as an option whatever its placeholder", () => {
    for (const name of PLACEHOLDERS) {
      const error = thrown(() => renderTemplate(`git fetch {${name}}`, { [name]: "--upload-pack=id" }, "commands.update"));
      expect(error.message).toBe(`commands.update: refusing to run it: placeholder {${name}}: "--upload-pack=id" starts with "-" (a command could read it as an option)`);
    }
    expect(thrown(() => renderTemplate("x {port}", { port: -1 })).message).toContain('placeholder {port}: "-1" starts with "-"');
  });

  it("each placeholder has its own rule", () => {
    expect(thrown(() => renderTemplate("x {address}", { address: "localhost" })).message).toBe('command: refusing to run it: placeholder {address}: "localhost" is not an IP address');
    expect(renderTemplate("x {address}", { address: "10.0.0.1" })).toBe("x 10.0.0.1");
    for (const port of [0, 65536, 80.5, "80 ", "0x50", "8e3", "080"]) {
      expect(thrown(() => renderTemplate("x {port}", { port })).message).toContain("is not an integer 1-65535");
    }
    expect(renderTemplate("x {port}", { port: "65535" })).toBe("x 65535");
    expect(thrown(() => renderTemplate("x {id}", { id: "web 1" })).message).toContain('placeholder {id}: "web 1" is not letters, digits');
    expect(thrown(() => renderTemplate("x {host}", { host: ".hidden" })).message).toContain('placeholder {host}: ".hidden" is not letters');
    expect(thrown(() => renderTemplate("x {previous}", { previous: "v1/../../etc" })).message).toContain("placeholder {previous}");
    // Not a string or a number (a plugin's mistake): refused, not stringified.
    expect(thrown(() => renderTemplate("x {version}", { version: ["v1"] as unknown as string })).message).toContain("expected a string or a number");
  });

  it("a very long value is shown cut short", () => {
    const error = thrown(() => renderTemplate("x {version}", { version: `v;${"a".repeat(10_000)}` }));
    expect(error.message.length).toBeLessThan(250);
    expect(error.message).toContain("…");
  });

  it("values are looked up as own keys only", () => {
    const values = Object.create({ version: "--inherited" }) as Record<string, string>;
    expect(thrown(() => renderTemplate("x {version}", values)).message).toBe("command: placeholder {version} has no value here");
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

describe("inertLine: an adapter's warning as it may be printed", () => {
  it("shows control and direction characters as ?, so the text cannot start a line (a forged log line or ::workflow-command) or move the cursor", async () => {
    const { inertLine } = await import("./template.js");
    expect(inertLine("late switch\n::error::forged\r\u001b[2Jgone\u202eevil\u0085")).toBe("late switch?::error::forged??[2Jgone?evil?");
    expect(inertLine("nginx on lb1: closed 5ms late")).toBe("nginx on lb1: closed 5ms late");
  });

  it("cuts a long text short, and shows a value that is not text as JSON", async () => {
    const { inertLine } = await import("./template.js");
    expect(inertLine("x".repeat(600))).toBe(`${"x".repeat(500)}…`);
    expect(inertLine({ a: 1 })).toBe('"{\\"a\\":1}"');
  });
});

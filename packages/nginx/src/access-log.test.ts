import { execFileSync, spawnSync } from "node:child_process";
import { appendFileSync, chmodSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { percentileMs, shellQuote } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { NODROP_LOG_FORMAT, accessLogSetupProblems, parseAccessLog, parseCursor, trafficCommand } from "./access-log.js";
import { renderNginxConfig } from "./render.js";

const line = (status: number, seconds: number, upstreamStatus: string, addr: string) => `1764800000.123|${status}|${seconds.toFixed(3)}|${upstreamStatus}|${addr}`;

describe("nodrop's access log", () => {
  it("counts each endpoint's requests, 5xx answers and latency", () => {
    const text = [line(200, 0.004, "200", "127.0.0.1:8011"), line(500, 0.009, "500", "127.0.0.1:8012"), line(200, 0.3, "200", "127.0.0.1:8012"), ""].join("\n");
    const { endpoints, consumed, skipped } = parseAccessLog(text);
    expect(consumed).toBe(Buffer.byteLength(text));
    expect(skipped).toBe(0);
    expect(endpoints["127.0.0.1:8011"]).toMatchObject({ requests: 1, errors: 0 });
    expect(endpoints["127.0.0.1:8012"]).toMatchObject({ requests: 2, errors: 1 });
    expect(percentileMs(endpoints["127.0.0.1:8012"]!, 0.99)).toBeGreaterThanOrEqual(300);
  });

  it("counts a retried request's attempts on each endpoint, the refused one as an error, the time on the one that answered", () => {
    const { endpoints } = parseAccessLog(`${line(200, 0.01, "502, 200", "127.0.0.1:8011, [::1]:8012")}\n`);
    expect(endpoints["127.0.0.1:8011"]).toMatchObject({ requests: 1, errors: 1, latency: [] });
    expect(endpoints["[::1]:8012"]).toMatchObject({ requests: 1, errors: 0 });
  });

  it("leaves a line still being written for the next read, and skips lines of another format or forged ones", () => {
    const whole = `${line(200, 0.001, "200", "127.0.0.1:8011")}\n`;
    const forged = ['127.0.0.1 - - [03/Dec/2026] "GET / HTTP/1.1" 200', "1764800000.123|200|0.001|200|127.0.0.1:8011|extra", "1764800000.123|200|0.001|200|evil.example:80", "1764800000.123|200|0.001|200, 200|127.0.0.1:8011"];
    const { endpoints, consumed, skipped } = parseAccessLog(`${whole}${forged.join("\n")}\n1764800000.1`);
    expect(consumed).toBe(Buffer.byteLength(`${whole}${forged.join("\n")}\n`));
    expect(skipped).toBe(4);
    expect(Object.keys(endpoints)).toEqual(["127.0.0.1:8011"]);
    // Answered by nginx itself: nothing to attribute, nothing skipped.
    expect(parseAccessLog(`${line(404, 0, "-", "-")}\n`)).toMatchObject({ endpoints: {}, skipped: 0 });
  });

  it("counts a pool with no live server (nginx logs its name and 502) as unattributed, and a client that left before the answer (status -) as no error", () => {
    const parsed = parseAccessLog(`${line(502, 0, "502", "nodrop_web_canary")}\n${line(502, 0.01, "502, 502", "127.0.0.1:8011, nodrop_web_canary")}\n${line(499, 0.2, "-", "127.0.0.1:8012")}\n`);
    expect(parsed.unattributed).toEqual({ requests: 2, errors: 2 });
    expect(parsed.endpoints["127.0.0.1:8011"]).toMatchObject({ requests: 1, errors: 1 });
    expect(parsed.endpoints["127.0.0.1:8012"]).toMatchObject({ requests: 1, errors: 0 });
    expect(parsed.skipped).toBe(0);
  });

  it("reads a cursor back only as inode:offset", () => {
    expect(parseCursor("1234:56")).toEqual({ inode: "1234", offset: 56 });
    for (const bad of ["", "1234", "a:1", "1:2:3", "1:99999999999999999999", "1;rm -rf /:2"]) expect(() => parseCursor(bad)).toThrow(/cursor/);
  });

  it("quotes the file in its command, and refuses a link there", () => {
    const command = trafficCommand("/var/log/nginx/it's.log", { inode: "12", offset: 34 });
    expect(command).toContain("'/var/log/nginx/it'\\''s.log'");
    expect(command).toContain("if [ -L ");
    expect(command).toContain("from=34");
  });

  it("documents a format nginx's log_format takes: the fields the parser reads, in its order", () => {
    expect(NODROP_LOG_FORMAT).toBe("log_format nodrop '$msec|$status|$request_time|$upstream_status|$upstream_addr';");
  });
});

describe("rendering a split", () => {
  const instances = [8011, 8012, 8013].map((port) => ({ id: `web-${port}`, host: "local", address: "127.0.0.1", port, version: port === 8013 ? "v2" : "v1" }));
  const routing = { pools: { stable: ["web-8011", "web-8012"], canary: ["web-8013"] }, defaultPool: "stable", pins: { v2: "canary" }, split: { key: "$remote_addr$http_user_agent", percent: 12.5, to: "canary" } };

  it("hashes the key into the share and takes the rest with *, never a second percentage (sums of exactly 100% misbehave before nginx 1.31.2)", () => {
    const text = renderNginxConfig({ name: "web", routing, instances, generation: 3, versionCookie: "nodrop_version" });
    expect(text).toContain('split_clients "$remote_addr$http_user_agent" $nodrop_web_split {\n    12.5% nodrop_web_canary;\n    * nodrop_web_stable;\n}');
    expect(text).toContain("map $cookie_nodrop_version $nodrop_web_pool {\n    default $nodrop_web_split;\n    \"v2\" nodrop_web_canary;");
  });

  it("renders a share computed with float error as nginx's two decimals", () => {
    const text = renderNginxConfig({ name: "web", routing: { ...routing, split: { ...routing.split, percent: 0.1 + 0.2 } }, instances, generation: 3, versionCookie: "nodrop_version" });
    expect(text).toContain("    0.3% nodrop_web_canary;");
  });

  it("refuses a key that would splice text into the config", () => {
    expect(() => renderNginxConfig({ name: "web", routing: { ...routing, split: { ...routing.split, key: '$remote_addr" ; include /etc/passwd; "' } }, instances, generation: 3, versionCookie: "nodrop_version" })).toThrow(/split key/);
  });
});

describe("the traffic command, run here", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nodrop-log-"));
  const log = path.join(dir, "web.nodrop.log");
  const sh = (command: string) => spawnSync("bash", ["-c", command], { encoding: "utf8" });
  const head = (out: string) => out.slice(0, out.indexOf("\n")).split(" ");

  it("reads what came after the cursor, from the start when the log was rotated, and nothing through a planted link", () => {
    writeFileSync(log, `${line(200, 0.001, "200", "127.0.0.1:8011")}\n`);
    const start = sh(trafficCommand(log, undefined));
    const [inode, size] = head(start.stdout);
    appendFileSync(log, `${line(500, 0.002, "500", "127.0.0.1:8012")}\n`);
    const next = sh(trafficCommand(log, { inode: inode!, offset: Number(size) }));
    expect(next.status).toBe(0);
    expect(Object.keys(parseAccessLog(next.stdout.slice(next.stdout.indexOf("\n") + 1)).endpoints)).toEqual(["127.0.0.1:8012"]);
    // Rotated: a new file (another inode) under the name is read from its start.
    renameSync(log, `${log}.1`);
    writeFileSync(log, `${line(200, 0.001, "200", "127.0.0.1:8013")}\n`);
    const rotated = sh(trafficCommand(log, { inode: inode!, offset: Number(size) }));
    expect(head(rotated.stdout)[1]).toBe("0");
    expect(Object.keys(parseAccessLog(rotated.stdout.slice(rotated.stdout.indexOf("\n") + 1)).endpoints)).toEqual(["127.0.0.1:8013"]);
    // A log this user cannot read is refused (exit 5), though stat works on it (as on nginx's root:adm
    // 0640 logs). Root reads anything: as root, the command runs as nobody.
    chmodSync(dir, 0o755);
    chmodSync(log, 0o600);
    const asNobody = process.getuid?.() === 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
    const unreadable = sh(`${asNobody}bash -c ${shellQuote(trafficCommand(log, undefined))}`);
    chmodSync(log, 0o644);
    expect(unreadable.status).toBe(5);
    expect(unreadable.stderr).toContain("is not readable by");
    // A link planted at the log's path is refused (exit 3), and nothing of its target is read.
    rmSync(log);
    symlinkSync("/etc/passwd", log);
    const planted = sh(trafficCommand(log, { inode: "1", offset: 0 }));
    expect(planted.status).toBe(3);
    expect(planted.stdout).toBe("");
    expect(planted.stderr).toContain("is a symbolic link");
    rmSync(log);
  });

  it("keeps the cursor exact past bytes that are not UTF-8 (another format's line in the same file)", () => {
    const foreign = Buffer.concat([Buffer.from("GET /caf"), Buffer.from([0xe9, 0xff, 0xc3]), Buffer.from(" HTTP/1.1\n")]);
    writeFileSync(log, Buffer.concat([foreign, Buffer.from(`${line(200, 0.001, "200", "127.0.0.1:8011")}\n`)]));
    const [inode] = head(sh(trafficCommand(log, undefined)).stdout);
    const first = sh(trafficCommand(log, { inode: inode!, offset: 0 }));
    const text = first.stdout.slice(first.stdout.indexOf("\n") + 1);
    const parsed = parseAccessLog(text);
    expect(parsed.skipped).toBe(1);
    // The offset the parser consumed is the file's size: the next read starts on the next line, not inside one.
    expect(parsed.consumed).toBe(statSync(log).size);
    appendFileSync(log, `${line(500, 0.002, "500", "127.0.0.1:8012")}\n`);
    const next = sh(trafficCommand(log, { inode: inode!, offset: parsed.consumed }));
    const again = parseAccessLog(next.stdout.slice(next.stdout.indexOf("\n") + 1));
    expect(again.skipped).toBe(0);
    expect(Object.keys(again.endpoints)).toEqual(["127.0.0.1:8012"]);
    execFileSync("rm", ["-rf", dir]);
  });
});

describe("the access log's setup in nginx -T", () => {
  const file = "/var/log/nginx/shop.nodrop.log";
  const good = `${NODROP_LOG_FORMAT}\n        access_log ${file} nodrop;`;

  it("finds nothing wrong when the format and the access_log line are there", () => {
    expect(accessLogSetupProblems(good, file)).toEqual([]);
    expect(accessLogSetupProblems(`    ${NODROP_LOG_FORMAT}   # for nodrop\n  access_log ${file} nodrop buffer=4k flush=1s;`, file)).toEqual([]);
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\n    location / { proxy_pass http://$nodrop_web_pool; access_log "${file}" nodrop;`, file)).toEqual([]);
  });

  it("refuses a log the gates could not read in time: gzip, buffer without flush, another format's name", () => {
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\naccess_log ${file} nodrop gzip;`, file)).toEqual([expect.stringContaining("has gzip")]);
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\naccess_log ${file} nodrop buffer=32k;`, file)).toEqual([expect.stringContaining("buffer= without flush=")]);
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\naccess_log ${file} nodrop-old;`, file)).toEqual([expect.stringContaining(`no \`access_log ${file} nodrop;\``)]);
    expect(accessLogSetupProblems(`log_format nodrop-old '$msec';\naccess_log ${file} nodrop;`, file)).toEqual([expect.stringContaining("no `log_format nodrop`")]);
  });

  it("names what is missing or different, with the line to add", () => {
    expect(accessLogSetupProblems(`access_log ${file} nodrop;`, file)).toEqual([expect.stringContaining(`no \`log_format nodrop\` in the nginx config: add \`${NODROP_LOG_FORMAT}\``)]);
    expect(accessLogSetupProblems(`log_format nodrop '$msec|$status|$request_time';\naccess_log ${file} nodrop;`, file)).toEqual([expect.stringContaining("is not nodrop's format")]);
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\naccess_log ${file} combined;`, file)).toEqual([expect.stringContaining(`no \`access_log ${file} nodrop;\``)]);
    expect(accessLogSetupProblems(`${NODROP_LOG_FORMAT}\naccess_log ${file}.old nodrop;`, file)).toHaveLength(1);
  });
});

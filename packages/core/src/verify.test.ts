import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { rejected } from "./test-support.js";
import { httpVerifier, verifyUrlProblem } from "./verify.js";

// A small HTTP server stands in for the site: these tests cover the probe's counting rules.
// The probe against real nginx during real deploys is tested in examples/wsgi-fleet.
interface Site {
  url: string;
  version: string;
  status: number;
  /** Cookies the probe sent, per request. */
  cookies: (string | undefined)[];
  close(): Promise<void>;
}

const sites: Site[] = [];
afterEach(async () => {
  await Promise.all(sites.splice(0).map((s) => s.close()));
});

async function site(version = "v1"): Promise<Site> {
  const state = { version, status: 200, cookies: [] as (string | undefined)[] };
  const server = http.createServer((request, response) => {
    state.cookies.push(request.headers.cookie);
    response.writeHead(site.status, { "x-app-version": site.version, "set-cookie": "sid=abc; Path=/" });
    response.end("ok");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const site: Site = Object.assign(state, {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/page?token=secret`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  });
  sites.push(site);
  return site;
}

const base = { ratePerSecond: 100, cookies: true, versionHeader: "X-App-Version", timeoutMs: 2000, settleMs: 0, maxFailed: 0 };
const until = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe("httpVerifier", () => {
  it("counts answers by version, and regressions once the new version has answered", async () => {
    const s = await site("v1");
    const verifier = httpVerifier({ ...base, url: s.url, maxRegressions: 0 });
    await verifier.start({ version: "v2" });
    await until(() => s.cookies.length >= 5);
    s.version = "v2";
    const atSwitch = s.cookies.length;
    await until(() => s.cookies.length >= atSwitch + 5);
    expect(verifier.breach()).toBeUndefined();
    s.version = "v1";
    const atBack = s.cookies.length;
    await until(() => s.cookies.length >= atBack + 5);
    const report = await verifier.stop();
    expect(report.failed).toBe(0);
    expect(report.requests).toBe(s.cookies.length);
    expect(report.ok).toBe(report.requests);
    expect((report.byVersion.v1 ?? 0) + (report.byVersion.v2 ?? 0)).toBe(report.requests);
    expect(report.byVersion.v2).toBeGreaterThanOrEqual(5);
    // Every v1 answer to a request started after the first v2 answer is a regression.
    expect(report.regressions).toBeGreaterThanOrEqual(4);
    expect(report.breach).toContain("answered by another version after v2");
    expect(verifier.breach()).toBe(report.breach);
  });

  it("counts failures by kind and crosses maxFailed", async () => {
    const s = await site("v1");
    const verifier = httpVerifier({ ...base, url: s.url, maxFailed: 2 });
    await verifier.start({ version: "v2" });
    s.status = 502;
    await until(() => s.cookies.length >= 6);
    expect(verifier.breach()).toMatch(/^verify: \d+ of \d+ requests to http:\/\/127\.0\.0\.1:\d+\/page failed \(allowed: 2; http_502 \d+\)$/);
    const report = await verifier.stop();
    expect(report.failed).toBe(report.errors.http_502);
    expect(report.failed + report.ok).toBe(report.requests);
    expect(report.failed).toBeGreaterThan(2);
  });

  it("sends back the cookies the site set, like a browser", async () => {
    const s = await site();
    const verifier = httpVerifier({ ...base, url: s.url });
    await verifier.start({ version: "v1" });
    await until(() => s.cookies.length >= 3);
    await verifier.stop();
    expect(s.cookies[0]).toBeUndefined();
    expect(s.cookies.slice(1).every((c) => c === "sid=abc")).toBe(true);
  });

  it("refuses to start when the site does not answer, and never shows the query string", async () => {
    const s = await site();
    const url = s.url;
    await s.close();
    sites.length = 0;
    const verifier = httpVerifier({ ...base, url });
    const error = await rejected(verifier.start({ version: "v2" }));
    expect(error.code).toBe("E_VERIFY");
    expect(error.message).toContain("does not answer before the deploy (ECONNREFUSED); nothing was changed");
    expect(error.message).not.toContain("secret");
    expect(verifier.url).not.toContain("token");
  });

  it("refuses URLs it cannot probe or that carry credentials", () => {
    expect(verifyUrlProblem("http://127.0.0.1:8080/")).toBeUndefined();
    expect(verifyUrlProblem("https://example.com/health?x=1")).toBeUndefined();
    expect(verifyUrlProblem("ftp://example.com/")).toBe("expected an http:// or https:// URL, got a ftp: URL");
    expect(verifyUrlProblem("not a url")).toContain("expected an http:// or https:// URL");
    expect(verifyUrlProblem("http://user:pw@example.com/")).toContain("credentials in the URL are not supported");
  });
});

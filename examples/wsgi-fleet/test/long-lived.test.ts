// Long-lived connections (server-sent events here; WebSockets behave the same for nginx) are held
// while their instance drains, up to proxy.drainTimeout; the report counts those cut after it.
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Fleet, deployUnderLoad, startFleet } from "../src/index.js";

interface Stream {
  events: number;
  ended: "complete" | "cut";
  instance: string | undefined;
}

/** Opens an SSE stream through nginx and resolves when it ends, saying whether it ran to its end. */
function openStream(url: string, ms: number): Promise<Stream> {
  return new Promise((resolve) => {
    let events = 0;
    let complete = false;
    const request = http.get(`${url}/events?ms=${ms}`, { agent: false }, (response) => {
      const instance = response.headers["x-app-instance"] as string | undefined;
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        events += chunk.split("\n\n").filter((e) => e.startsWith("data:")).length;
        if (chunk.includes("event: end")) complete = true;
      });
      const done = () => resolve({ events, ended: complete ? "complete" : "cut", instance });
      response.on("end", done);
      response.on("error", done);
      response.on("close", done);
    });
    request.on("error", () => resolve({ events, ended: "cut", instance: undefined }));
  });
}

describe("long-lived connections during a deploy (real nginx + gunicorn)", () => {
  let fleet: Fleet;
  beforeAll(async () => {
    // nginx's own ceiling (worker_shutdown_timeout) above the deploy's length, so nodrop's is the one
    // that acts; gunicorn's graceful stop cut to 2 s (from 10), the time each cut stream holds a stop.
    fleet = await startFleet({ ports: [8271, 8272, 8273, 8274], proxyPort: 18271, proxy: { drainTimeout: "2s" }, workerShutdownTimeout: 180, gracefulTimeout: 2 });
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it("holds them until the drain ceiling, then reports how many were cut", async () => {
    // Three streams that would outlive the deploy; they land on instances by round robin.
    const streams = [openStream(fleet.url, 90_000), openStream(fleet.url, 90_000), openStream(fleet.url, 90_000)];
    await new Promise((r) => setTimeout(r, 500));
    const result = await deployUnderLoad({ fleet, version: "v2", load: { clients: 16, seed: 41 } });
    const ended = await Promise.all(streams);

    expect(result.cli.code).toBe(0);
    expect(result.stats.failed).toBe(0);
    const cut = result.report!.routes.reduce((sum, r) => sum + r.cut, 0);
    // Every stream outlived its instance's drain ceiling and was cut when the instance stopped.
    expect(ended.filter((s) => s.ended === "cut")).toHaveLength(3);
    expect(cut).toBe(3);
    // They were held (not cut at the reload): each had delivered events for at least the ceiling.
    for (const stream of ended) expect(stream.events).toBeGreaterThanOrEqual(5);
  });
});

import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { runLoad, startLoad } from "./load.js";

interface TestServer {
  url: string;
  /** Requests the server has seen (including ones it killed). */
  seen(): number;
  close(): Promise<void>;
}

async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse, nthOnSocket: number, n: number) => void): Promise<TestServer> {
  const perSocket = new WeakMap<Socket, number>();
  let n = 0;
  const server = http.createServer((req, res) => {
    const nth = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, nth);
    n++;
    req.resume();
    req.on("end", () => handler(req, res, nth, n));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen: () => n,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function reply(res: http.ServerResponse, status = 200, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "text/plain", ...headers });
  res.end("x".repeat(64));
}

describe("startLoad / runLoad", () => {
  it("counts non-2xx responses as failed", async () => {
    const server = await serve((req, res) => reply(res, req.url === "/" ? 500 : 200));
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 2, maxRequests: 40, postRatio: 0.25, slowRatio: 0.25, slowMs: 0, seed: 1 });
      const gets = records.filter((r) => r.kind === "get").length;
      expect(gets).toBeGreaterThan(0);
      expect(records.some((r) => r.kind === "post")).toBe(true);
      expect(records.some((r) => r.kind === "slow")).toBe(true);
      expect(stats.requests).toBe(40);
      expect(stats.failed).toBe(gets);
      expect(stats.ok).toBe(40 - gets);
      expect(stats.byStatus["500"]).toBe(gets);
      expect(stats.errors).toEqual({ http_500: gets });
      expect(stats.retried).toBe(0);
      expect(server.seen()).toBe(40);
    } finally {
      await server.close();
    }
  });

  it("retries a GET once when its reused keep-alive socket is closed before any response byte", async () => {
    // Every second request on a connection finds the connection closed (like an idle keep-alive
    // timeout racing with the next request).
    const server = await serve((req, res, nth) => (nth === 1 ? reply(res) : req.socket.destroy()));
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 3, maxRequests: 10, postRatio: 0, slowRatio: 0.5, slowMs: 0, seed: 7 });
      expect(stats.requests).toBe(10);
      expect(stats.failed).toBe(0);
      expect(stats.ok).toBe(10);
      expect(stats.retried).toBe(7); // all but each client's first request went out on a reused socket
      expect(stats.rawFailed).toBe(7);
      expect(records.filter((r) => r.retried).every((r) => r.status === 200 && r.error === undefined)).toBe(true);
      expect(server.seen()).toBe(17);
    } finally {
      await server.close();
    }
  });

  it("with retry: idempotent (Go's rule) never resends a POST", async () => {
    const server = await serve((req, res, nth) => (nth === 1 ? reply(res) : req.socket.destroy()));
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 1, maxRequests: 10, postRatio: 1, slowRatio: 0, retry: "idempotent" });
      expect(records.every((r) => r.kind === "post")).toBe(true);
      expect(stats).toMatchObject({ requests: 10, ok: 5, failed: 5, rawFailed: 5, strictFailed: 5, retried: 0, retriedPost: 0 });
      expect(records.filter((r) => r.status === 0)).toHaveLength(5);
      for (const key of Object.keys(stats.errors)) expect(["ECONNRESET", "EPIPE"]).toContain(key);
      expect(server.seen()).toBe(10);
    } finally {
      await server.close();
    }
  });

  it("by default (browser rule) resends a POST once on a stale reused socket, and counts it as a Go-rule failure", async () => {
    const server = await serve((req, res, nth) => (nth === 1 ? reply(res) : req.socket.destroy()));
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 1, maxRequests: 10, postRatio: 1, slowRatio: 0 });
      expect(records.every((r) => r.kind === "post")).toBe(true);
      // Every request after the first goes out on the socket its predecessor reused, which the server kills.
      expect(stats).toMatchObject({ requests: 10, ok: 10, failed: 0, retried: 9, retriedPost: 9, rawFailed: 9, strictFailed: 9 });
    } finally {
      await server.close();
    }
  });

  it("does not retry when response bytes had already arrived", async () => {
    const server = await serve((req, res, nth) => {
      if (nth === 1) return reply(res);
      req.socket.write("HTTP/1.1 200 OK\r\n");
      req.socket.destroy();
    });
    try {
      const { stats } = await runLoad({ url: server.url, clients: 1, maxRequests: 6, postRatio: 0, slowRatio: 0 });
      expect(stats).toMatchObject({ requests: 6, ok: 3, failed: 3, rawFailed: 3, retried: 0 });
    } finally {
      await server.close();
    }
  });

  it("counts a response cut off mid-body as failed", async () => {
    const server = await serve((req, res, nth) => {
      if (nth === 1) return reply(res);
      res.writeHead(200, { "content-length": "100" });
      res.write("partial");
      setImmediate(() => req.socket.destroy());
    });
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 1, maxRequests: 4, postRatio: 0, slowRatio: 0 });
      expect(stats).toMatchObject({ requests: 4, ok: 2, failed: 2, retried: 0 });
      expect(records.filter((r) => r.error !== undefined).every((r) => r.status === 200)).toBe(true);
    } finally {
      await server.close();
    }
  });

  it("detects version regressions and late old-version responses", async () => {
    // Requests 1-5: v9, 6-10: v10, 11-12: v9 again (a regression), 13-15: v10.
    const server = await serve((_req, res, _nth, n) => {
      const version = n <= 5 || n === 11 || n === 12 ? "v9" : "v10";
      reply(res, 200, { "x-app-version": version, "x-app-instance": version === "v9" ? "blue" : "green" });
    });
    try {
      const { stats } = await runLoad({ url: server.url, clients: 1, maxRequests: 15, postRatio: 0.2, slowRatio: 0.2, slowMs: 0, seed: 3 });
      expect(stats.byVersion).toEqual({ v9: 7, v10: 8 });
      expect(stats.versionRegressions).toBe(2);
      expect(stats.lateOld).toBe(2);
      expect(stats.firstNewAt).toBeDefined();
      expect(stats.lastOldAt! > stats.firstNewAt!).toBe(true);
      expect(stats.switchesPerClient).toEqual([3]);
      expect(stats.failed).toBe(0);
    } finally {
      await server.close();
    }
  });

  it("counts a timeout as a failure", async () => {
    const server = await serve((req, res) => {
      if (req.url?.startsWith("/slow")) return; // never answers
      reply(res);
    });
    try {
      const { stats, records } = await runLoad({ url: server.url, clients: 2, maxRequests: 2, slowRatio: 1, postRatio: 0, requestTimeoutMs: 200 });
      expect(stats).toMatchObject({ requests: 2, ok: 0, failed: 2, retried: 0 });
      expect(stats.errors).toEqual({ ETIMEDOUT: 2 });
      expect(records.every((r) => r.status === 0)).toBe(true);
    } finally {
      await server.close();
    }
  });

  it("keeps one cookie jar per client", async () => {
    let issued = 0;
    let withCookie = 0;
    const server = await serve((req, res) => {
      if (req.headers.cookie?.startsWith("sid=")) {
        withCookie++;
        return reply(res);
      }
      issued++;
      reply(res, 200, { "set-cookie": `sid=${issued}; Path=/; HttpOnly` });
    });
    try {
      await runLoad({ url: server.url, clients: 3, maxRequests: 30, seed: 5 });
      expect(issued).toBe(3);
      expect(withCookie).toBe(27);
      issued = 0;
      withCookie = 0;
      await runLoad({ url: server.url, clients: 3, maxRequests: 30, cookies: false });
      expect(issued).toBe(30);
      expect(withCookie).toBe(0);
    } finally {
      await server.close();
    }
  });

  it("stops on stop() and on the signal; no request starts after that", async () => {
    let run: ReturnType<typeof startLoad> | undefined;
    const controller = new AbortController();
    const server = await serve((_req, res, _nth, n) => {
      if (n === 20) run?.stop();
      if (n === 50) controller.abort();
      reply(res);
    });
    try {
      run = startLoad({ url: server.url, clients: 4, durationMs: 60_000 });
      const first = await run.done;
      expect(first.stats.requests).toBeGreaterThanOrEqual(20);
      expect(first.stats.requests).toBe(server.seen());
      expect(first.stats.failed).toBe(0);
      run = undefined;
      const before = server.seen();
      const second = await runLoad({ url: server.url, clients: 4, durationMs: 60_000, signal: controller.signal });
      expect(server.seen()).toBeGreaterThanOrEqual(50);
      expect(second.stats.requests).toBe(server.seen() - before);
      const aborted = await runLoad({ url: server.url, clients: 2, durationMs: 60_000, signal: controller.signal });
      expect(aborted.stats.requests).toBe(0);
    } finally {
      await server.close();
    }
  });

  it("ends after durationMs", async () => {
    const server = await serve((_req, res) => reply(res));
    try {
      const { stats } = await runLoad({ url: server.url, clients: 2, durationMs: 150, slowMs: 0 });
      expect(stats.requests).toBeGreaterThan(0);
      expect(stats.requests).toBe(server.seen());
      expect(stats.failed).toBe(0);
    } finally {
      await server.close();
    }
  });

  it.skipIf(process.platform !== "linux")("binds each client to its local address", async () => {
    const byClient = new Map<string, Set<string>>();
    const server = await serve((req, res) => {
      const address = req.socket.remoteAddress ?? "?";
      const cookie = req.headers.cookie ?? "";
      let set = byClient.get(address);
      if (!set) byClient.set(address, (set = new Set()));
      set.add(cookie);
      reply(res, 200, cookie ? {} : { "set-cookie": `c=${address}` });
    });
    try {
      const { stats } = await runLoad({ url: server.url, clients: 4, maxRequests: 20, localAddresses: ["127.0.0.2", "127.0.0.3"] });
      expect(stats.failed).toBe(0);
      expect([...byClient.keys()].sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
    } finally {
      await server.close();
    }
  });

  it("validates options", async () => {
    expect(() => startLoad({ url: "http://127.0.0.1:1", clients: 1 })).toThrow(/durationMs or maxRequests/);
    expect(() => startLoad({ url: "https://127.0.0.1:1", clients: 1, maxRequests: 1 })).toThrow(/http:/);
    expect(() => startLoad({ url: "http://127.0.0.1:1", clients: 0, maxRequests: 1 })).toThrow(/clients/);
    await expect(runLoad({ url: "http://127.0.0.1:1", clients: 1, maxRequests: 1, postRatio: 2 })).rejects.toThrow(/postRatio/);
  });

  it("counts a refused connection as a failure", async () => {
    const server = await serve((_req, res) => reply(res));
    const url = server.url;
    await server.close();
    const { stats } = await runLoad({ url, clients: 2, maxRequests: 4 });
    expect(stats).toMatchObject({ requests: 4, ok: 0, failed: 4, retried: 0 });
    expect(stats.errors).toEqual({ ECONNREFUSED: 4 });
  });
});

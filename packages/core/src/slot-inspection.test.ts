import { execFile } from "node:child_process";
import { mkdtemp, rm, symlink } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { inspectSlotCommand, inspectSlotsCommand, listenerTakes, parseSlotInspection, parseSlotInspections } from "./slot-inspection.js";

describe("listenerTakes", () => {
  it.each([
    ["127.0.0.1:9011", "127.0.0.1", true],
    ["0.0.0.0:9011", "127.0.0.1", true],
    ["*:9011", "10.0.0.5", true],
    ["[::]:9011", "127.0.0.1", true],
    ["[::ffff:127.0.0.1]:9011", "127.0.0.1", true],
    ["127.0.0.1%lo:9011", "127.0.0.1", true],
    ["[::1]:9011", "::1", true],
    // Another address on the same port (test hosts share a loopback) leaves this one free.
    ["127.0.0.2:9011", "127.0.0.1", false],
    ["[::1]:9011", "127.0.0.1", false],
    // The config may spell an IPv6 address long; ss prints it compressed.
    ["[::1]:9011", "0:0:0:0:0:0:0:1", true],
  ])("%s takes %s's port: %s", (local, address, takes) => {
    expect(listenerTakes(local, address)).toBe(takes);
  });
});

describe("parseSlotInspection", () => {
  it("reads the listener, the live slot's resident size and MemAvailable", () => {
    const out = 'listen 127.0.0.1:9011 users:(("gunicorn",pid=4242,fd=5),("gunicorn",pid=4243,fd=5))\nrss 61440\nmem 8000000\n';
    expect(parseSlotInspection(out, "127.0.0.1")).toEqual({ free: false, listener: "127.0.0.1:9011 (gunicorn 4242)", liveRssBytes: 61440 * 1024, availableBytes: 8_000_000 * 1024 });
  });

  it("a port free on this address, no process visible: free, size unknown", () => {
    expect(parseSlotInspection("listen 127.0.0.2:9011 users:((\"x\",pid=1,fd=3))\nmem 100\n", "127.0.0.1")).toEqual({ free: true, availableBytes: 102_400 });
  });

  it("without ss, a port that answers a connection is taken", () => {
    expect(parseSlotInspection("noss\nopen\n", "127.0.0.1")).toMatchObject({ free: false, listener: "127.0.0.1 (answers a connection)" });
  });

  it("keeps nothing of a hostile host's text but the address and numbers", () => {
    const out = 'listen 0.0.0.0:9011 users:(("$(rm -rf /)\u001b[2J",pid=7,fd=5))\nrss 12abc\nmem -5\n';
    const seen = parseSlotInspection(out, "127.0.0.1");
    expect(seen.listener).toBe("0.0.0.0:9011 (pid 7)");
    expect(seen.liveRssBytes).toBeUndefined();
    expect(seen.availableBytes).toBeUndefined();
  });
});

describe("inspectSlotCommand", () => {
  it("refuses a value that is not a port", () => {
    expect(() => inspectSlotCommand(9011.5, 8011, "127.0.0.1")).toThrow(/not a port/);
    expect(() => inspectSlotCommand(0, 8011, "127.0.0.1")).toThrow(/not a port/);
  });
});

describe("inspectSlotCommand on this machine's own ss and bash", () => {
  it("finds a listener on the idle port, names its pid, and reads MemAvailable", async () => {
    const server = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const { stdout } = await promisify(execFile)("bash", ["-c", inspectSlotCommand(port, port, "127.0.0.1")]);
      const seen = parseSlotInspection(stdout, "127.0.0.1");
      expect(seen.free).toBe(false);
      expect(seen.listener).toMatch(new RegExp(`^127\\.0\\.0\\.1:${port} \\(\\S+ ${process.pid}\\)$`));
      expect(seen.availableBytes).toBeGreaterThan(0);
      // This process holds the "live" port here too: its resident size is what the overlap counts.
      expect(seen.liveRssBytes).toBeGreaterThan(1024 * 1024);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    // Closed: the port is free again.
    const { stdout } = await promisify(execFile)("bash", ["-c", inspectSlotCommand(port, port, "127.0.0.1")]);
    expect(parseSlotInspection(stdout, "127.0.0.1").free).toBe(true);
  });
});

describe("inspectSlotsCommand: several pairs in one command", () => {
  it("refuses an address that is not an IP literal (it is part of a shell line)", () => {
    expect(() => inspectSlotsCommand([{ idlePort: 9011, livePort: 8011 }], "127.0.0.1; rm -rf /")).toThrow(/not an IP address/);
  });

  it("reads each pair's block, with the host's MemAvailable in every one", () => {
    const out = 'slot 9011\nlisten 127.0.0.1:9011 users:(("gunicorn",pid=4242,fd=5))\nrss 100\nslot 9012\nrss 200\nmem 8000\n';
    const seen = parseSlotInspections(out, "127.0.0.1");
    expect(seen.get(9011)).toEqual({ free: false, listener: "127.0.0.1:9011 (gunicorn 4242)", liveRssBytes: 100 * 1024, availableBytes: 8000 * 1024 });
    expect(seen.get(9012)).toEqual({ free: true, liveRssBytes: 200 * 1024, availableBytes: 8000 * 1024 });
    expect(seen.has(9013)).toBe(false);
  });

  it("on this machine: a listener on one idle port, the other free, each live port's process sized", async () => {
    const servers = await Promise.all([0, 1, 2].map(() => listening()));
    const [taken, liveA, liveB] = servers.map((s) => (s.address() as net.AddressInfo).port) as [number, number, number];
    const free = await freePort();
    try {
      const { stdout } = await promisify(execFile)("bash", ["-c", inspectSlotsCommand([{ idlePort: taken, livePort: liveA }, { idlePort: free, livePort: liveB }], "127.0.0.1")]);
      const seen = parseSlotInspections(stdout, "127.0.0.1");
      expect(seen.get(taken)).toMatchObject({ free: false, listener: expect.stringMatching(new RegExp(`^127\\.0\\.0\\.1:${taken} \\(\\S+ ${process.pid}\\)$`)) });
      expect(seen.get(free)?.free).toBe(true);
      for (const port of [taken, free]) expect(seen.get(port)?.liveRssBytes).toBeGreaterThan(1024 * 1024);
      // Who runs each side, from the one ps: this process holds both, so the idle listener is taken for the app's.
      expect(seen.get(taken)?.listenerOwner).toMatch(new RegExp(`^${process.getuid!()}:\\S+$`));
      expect(seen.get(taken)?.listenerOwner).toBe(seen.get(taken)?.liveOwner);
      expect(seen.get(free)?.listenerOwner).toBeUndefined();
    } finally {
      await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    }
  });
});

describe("inspectSlotsCommand on a host with ss and awk only (no procps: a slim image)", () => {
  it("still names each side's owner and sizes the live port's processes, from /proc", async () => {
    const bin = await mkdtemp(path.join(os.tmpdir(), "nodrop-slim-"));
    const which = promisify(execFile);
    for (const tool of ["ss", "awk"]) await symlink((await which("bash", ["-c", `command -v ${tool}`])).stdout.trim(), path.join(bin, tool));
    const servers = await Promise.all([0, 1].map(() => listening()));
    const [taken, live] = servers.map((s) => (s.address() as net.AddressInfo).port) as [number, number];
    try {
      const bash = (await which("bash", ["-c", "command -v bash"])).stdout.trim();
      const { stdout } = await which(bash, ["-c", inspectSlotsCommand([{ idlePort: taken, livePort: live }], "127.0.0.1")], { env: { PATH: bin } });
      expect(stdout).not.toContain("noss");
      const seen = parseSlotInspections(stdout, "127.0.0.1").get(taken);
      expect(seen).toMatchObject({ free: false, listenerOwner: expect.stringMatching(new RegExp(`^${process.getuid!()}:\\S+$`)) });
      expect(seen?.liveOwner).toBe(seen?.listenerOwner);
      expect(seen?.liveRssBytes).toBeGreaterThan(1024 * 1024);
    } finally {
      await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
      await rm(bin, { recursive: true, force: true });
    }
  });
});

function listening(): Promise<net.Server> {
  const server = net.createServer((socket) => socket.destroy());
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function freePort(): Promise<number> {
  const server = await listening();
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

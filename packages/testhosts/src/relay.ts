import { execFile } from "node:child_process";
import net from "node:net";
import { promisify } from "node:util";

const run = promisify(execFile);

/** One connection through the relay: the client's side and the side to the target. */
export interface RelayPair {
  readonly client: net.Socket;
  readonly server: net.Socket;
}

export interface TcpRelay {
  /** Where the relay listens on 127.0.0.1. */
  readonly port: number;
  /** Every connection accepted so far, oldest first. */
  readonly pairs: readonly RelayPair[];
  /** Established connections from this process to the relay (counted with `ss`). */
  open(): Promise<number>;
  /** As if from the server: bytes that are no SSH packet, then a reset once the client gives up (the connection errors twice). */
  corrupt(pair: RelayPair): void;
  /** `corrupt` on the newest connection. */
  corruptNewest(): void;
  /** Nothing passes any more, and the connection stays open (a host that stopped answering). */
  freeze(pair: RelayPair): void;
  /** Ends both sides of a connection now; without one, every connection open now (new ones are still accepted). */
  cut(pair?: RelayPair): void;
  /** Stops the relay, cutting what is still open. */
  close(): Promise<void>;
}

/**
 * A TCP relay on 127.0.0.1 in front of `address:port` (an sshd of the test hosts), so a test can
 * inject a fault into one connection: corrupt bytes, a freeze, a cut. Each accepted connection is
 * one pair.
 */
export async function tcpRelay(address: string, port: number): Promise<TcpRelay> {
  const pairs: RelayPair[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(port, address);
    client.on("error", () => undefined);
    upstream.on("error", () => undefined);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
    pairs.push({ client, server: upstream });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const relayPort = (server.address() as net.AddressInfo).port;
  const stopForwarding = (pair: RelayPair) => {
    pair.server.unpipe(pair.client);
    pair.client.unpipe(pair.server);
    pair.server.pause();
    pair.client.pause();
  };
  const corrupt = (pair: RelayPair) => {
    stopForwarding(pair);
    pair.client.resume();
    pair.client.on("end", () => pair.client.resetAndDestroy());
    pair.client.write(Buffer.alloc(70_000, 0x5a));
  };
  const cutPair = (pair: RelayPair) => {
    pair.client.destroy();
    pair.server.destroy();
  };
  return {
    port: relayPort,
    pairs,
    async open() {
      const out = (await run("ss", ["-Htn", "state", "established", `( dport = :${relayPort} )`])).stdout;
      return out.split("\n").filter((l) => l.trim()).length;
    },
    corrupt,
    corruptNewest() {
      const pair = pairs.at(-1);
      if (pair) corrupt(pair);
    },
    freeze: stopForwarding,
    cut(pair) {
      if (pair) cutPair(pair);
      else for (const p of pairs) cutPair(p);
    },
    close() {
      for (const pair of pairs) cutPair(pair);
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// executorSuite over @nodrop/ssh's sshExecutor against real OpenSSH servers (@nodrop/testhosts:
// network namespaces, or loopback addresses where namespaces are not allowed).
import { sshExecutor } from "@nodrop/ssh";
import { type TestHosts, startTestHosts } from "@nodrop/testhosts";
import { afterAll, beforeAll, describe, it } from "vitest";
import { executorSuite } from "../src/index.js";

let hosts: TestHosts | undefined;

executorSuite(
  { describe, it, beforeAll, afterAll },
  {
    name: "sshExecutor",
    async create() {
      hosts = await startTestHosts({ names: ["kit1"] });
      const host = hosts.host("kit1");
      return sshExecutor({
        name: host.name,
        address: host.address,
        port: host.sshPort,
        user: "root",
        privateKey: hosts.pemKey.privateKey,
        hostKeys: { knownHosts: hosts.knownHosts },
      });
    },
    async dispose(executor) {
      try {
        await executor.dispose?.();
      } finally {
        await hosts?.stop();
      }
    },
  },
);

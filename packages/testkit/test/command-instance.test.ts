// instanceSuite over core's commandInstance with localExecutor, controlling one gunicorn instance
// of the example fleet through examples/wsgi-fleet/fleet.sh (the example's own command templates and
// health settings), on port 8621.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { commandInstance, execOrThrow, httpHealthCheck, localExecutor, shellQuote, waitHealthy } from "@nodrop/core";
import { fleetCommands, fleetSh } from "@nodrop/example-wsgi-fleet";
import { afterAll, beforeAll, describe, it } from "vitest";
import { instanceSuite } from "../src/index.js";

const port = 8621;

instanceSuite(
  { describe, it, beforeAll, afterAll },
  {
    name: "commandInstance (fleet.sh, gunicorn)",
    healthWait: { successes: 2, intervalMs: 100, deadlineMs: 20_000 },
    async setup() {
      const dir = await mkdtemp(path.join(os.tmpdir(), "nodrop-testkit-instance-"));
      const executor = localExecutor();
      const fleet = `${shellQuote(fleetSh)} ${shellQuote(dir)}`;
      const spec = { id: `web-${port}`, host: "local", address: "127.0.0.1", port };
      const control = commandInstance({
        spec,
        executor,
        commands: fleetCommands(shellQuote(dir)),
        timeoutMs: 60_000,
      });
      const health = httpHealthCheck({ path: "/health", versionHeader: "X-App-Version", timeoutMs: 2000 });
      const cleanup = async () => {
        await executor.exec(`${fleet} stop ${port}`, { timeoutMs: 60_000 }).catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
      };
      try {
        await execOrThrow(executor, `${fleet} update ${port} v1 && ${fleet} start ${port} 127.0.0.1`, "start of the instance on v1", { timeoutMs: 60_000 });
        await waitHealthy(health, spec, "v1", { successes: 2, intervalMs: 100, deadlineMs: 20_000 });
      } catch (error) {
        await cleanup();
        throw error;
      }
      return { control, health, versions: ["v1", "v2"] as const, cleanup };
    },
  },
);

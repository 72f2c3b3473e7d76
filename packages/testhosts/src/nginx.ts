import { readFile } from "node:fs/promises";
import path from "node:path";

export interface TestNginxConf {
  /** The prefix directory: temp paths go under its tmp/. */
  readonly dir: string;
  readonly includeFile: string;
  readonly pidFile: string;
  readonly errorLog: string;
  /** `address:port` of the one server. */
  readonly listen: string;
  /** The app name of nodrop's pool variable ($nodrop_<app>_pool). */
  readonly app: string;
  /** worker_shutdown_timeout, e.g. "10s". */
  readonly shutdownTimeout: string;
  readonly workerConnections?: number;
  /** Lines of the http block before nodrop's include (an extra include, map sizes). */
  readonly httpLines?: readonly string[];
  /** Lines of the location after proxy_pass (timeouts, the version cookie). */
  readonly locationLines?: readonly string[];
}

/**
 * The nginx.conf of a test's own nginx (a user-owned prefix, started with -p and -c): one server
 * that proxies to nodrop's pool variable, with the include of the file nodrop owns.
 */
export function testNginxConf(c: TestNginxConf): string {
  const temp = (name: string) => path.join(c.dir, "tmp", name);
  const indent = (lines: readonly string[] | undefined, by: string) => (lines ?? []).map((line) => `${by}${line}\n`).join("");
  return `worker_processes 2;
pid ${c.pidFile};
error_log ${c.errorLog} notice;
worker_shutdown_timeout ${c.shutdownTimeout};
events { worker_connections ${c.workerConnections ?? 1024}; }
http {
    access_log off;
    client_body_temp_path ${temp("body")};
    proxy_temp_path ${temp("proxy")};
    fastcgi_temp_path ${temp("fastcgi")};
    uwsgi_temp_path ${temp("uwsgi")};
    scgi_temp_path ${temp("scgi")};
${indent(c.httpLines, "    ")}    include ${c.includeFile};
    server {
        listen ${c.listen};
        location / {
            proxy_pass http://$nodrop_${c.app}_pool;
${indent(c.locationLines, "            ")}        }
    }
}
`;
}

/**
 * Stops the nginx whose master wrote `pidFile` and waits until it is gone (up to 10 s): nginx
 * daemonizes, so its master is not the caller's child. Not running: nothing to do.
 */
export async function stopNginx(pidFile: string): Promise<void> {
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
  if (!(pid > 0)) return;
  try {
    process.kill(pid, "SIGTERM");
    for (let i = 0; i < 200; i++) {
      process.kill(pid, 0);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } catch {
    // gone
  }
}

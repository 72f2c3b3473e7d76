import { schema } from "@nodrop/core";

// Absolute, plain characters, and no ".." segment: a path cannot climb out of where it says it is.
const path = (doc: string) => schema.str({ pattern: /^(?!.*(?:^|\/)\.\.(?:\/|$))\/[A-Za-z0-9._\/@+-]*$/, hint: "an absolute path of plain characters without ..", doc });

export const nginxOptionsSchema = schema.object({
  configFile: path("The include file nodrop owns and rewrites (upstreams and the routing map). Your nginx config includes it inside `http {}`."),
  binary: schema.optional(schema.str({ pattern: /^[A-Za-z0-9._\/-]+$/, hint: "a program name or path", doc: "The nginx program." }), "nginx"),
  prefix: schema.optional(path("nginx -p: the prefix the running master was started with.")),
  conf: schema.optional(path("nginx -c: the main config file the running master was started with.")),
  sudo: schema.optional(schema.bool({ doc: "Run nginx commands through `sudo -n`." }), false),
  pidFile: schema.optional(path("The master's pid file (the `pid` directive)."), "/run/nginx.pid"),
  accessLog: schema.optional(
    path(
      "An access log in nodrop's format (`log_format nodrop '$msec|$status|$request_time|$upstream_status|$upstream_addr';`, and `access_log <file> nodrop;` where the app is proxied): a canary's gates read each version's requests, 5xx answers and latency from it.",
    ),
  ),
  errorLog: schema.optional(path("The error log; read after each reload to catch [emerg] lines that `nginx -s reload` does not report.")),
  versionCookie: schema.optional(schema.str({ pattern: /^[A-Za-z0-9_]{1,48}$/, hint: "a cookie name of letters, digits and _", doc: "Cookie that pins a client to a version." }), "nodrop_version"),
  confirmTimeout: schema.optional(schema.duration({ min: 100, doc: "How long a reload may take to show a new worker generation." }), 10_000),
  drainTimeout: schema.optional(
    schema.duration({ min: 100, doc: "Ceiling on waiting for the old workers to finish: long-lived connections (WebSocket, server-sent events) to a removed instance are held this long, then counted as cut when it stops." }),
    90_000,
  ),
  onDrainTimeout: schema.optional(
    schema.oneOf(["cut", "fail"] as const, { doc: "At the ceiling: cut (go on; the report counts the connections cut) or fail (stop the deploy)." }),
    "cut",
  ),
  pollInterval: schema.optional(schema.duration({ min: 10, doc: "Between checks of the worker processes (the reload confirmation and the drain)." }), 25),
});

export type NginxOptions = schema.Infer<typeof nginxOptionsSchema>;

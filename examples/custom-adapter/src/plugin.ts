import path from "node:path";
import { SAFE_NAME, defineProxy, schema } from "@nodrop/core";
import { HAPROXY_CAPABILITIES, haproxyProxy } from "./haproxy-proxy.js";

/** The options a config gives `proxy: { use: ... }`, validated in nodrop's one pass over the config. */
export const haproxyOptionsSchema = schema.object({
  socket: schema.str({
    minLength: 1,
    pattern: /^(tcp:\/\/[A-Za-z0-9.:[\]-]+|[^\0\n]+)$/,
    hint: "a Unix socket path (relative to the config) or tcp://host:port",
    doc: "HAProxy's stats socket, declared with `level admin`.",
  }),
  backend: schema.str({ pattern: SAFE_NAME, hint: "a backend name (letters, digits, '.', '_', '-')", doc: "The backend that lists every instance as a server named by its id." }),
  drainTimeout: schema.optional(schema.duration({ min: 1, doc: "How long removed servers may take to finish their requests in flight." }), 30_000),
  confirmTimeout: schema.optional(schema.duration({ min: 1, doc: "How long the states set may take to read back." }), 5000),
  pollInterval: schema.optional(schema.duration({ min: 1, doc: "Between two reads of the states or the sessions." }), 50),
  commandTimeout: schema.optional(schema.duration({ min: 1, doc: "Bounds each runtime API command." }), 5000),
});

/**
 * The adapter as a nodrop plugin, what `proxy: { use: "@nodrop/example-custom-adapter" }` (or a
 * ./file that re-exports it) loads. The adapter talks to the socket from the machine nodrop runs
 * on; `proxy.host` is not used.
 */
export const haproxyPlugin = defineProxy({
  name: "haproxy",
  optionsSchema: haproxyOptionsSchema,
  capabilities: HAPROXY_CAPABILITIES,
  create: ({ options, baseDir }) =>
    haproxyProxy({
      socket: options.socket.startsWith("tcp://") ? options.socket : path.resolve(baseDir, options.socket),
      backend: options.backend,
      drainTimeoutMs: options.drainTimeout,
      confirmTimeoutMs: options.confirmTimeout,
      pollIntervalMs: options.pollInterval,
      commandTimeoutMs: options.commandTimeout,
    }),
});

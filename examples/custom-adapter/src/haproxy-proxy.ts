import {
  NodropError,
  type Proxy,
  type ProxyApplyResult,
  type ProxyCapabilities,
  type ProxyCheck,
  type ProxyContext,
  type ProxyInstance,
  type Routing,
  SAFE_NAME,
  singlePool,
  sleep,
  throwIfAborted,
  validateRouting,
} from "@nodrop/core";
import { type AdminState, type RuntimeApi, RuntimeApiRefusal, type ServerState, runtimeApi } from "./runtime-api.js";

const NAME = "haproxy";

/** Server states through the runtime API: pools and drains, nothing that needs a cookie or a hash. */
export const HAPROXY_CAPABILITIES: ProxyCapabilities = Object.freeze({ versionPinning: false, timedSwitch: false, affinity: false, drainsOldRouting: true });

export interface HaproxyProxyOptions {
  /**
   * HAProxy's stats socket, declared with `level admin`: a Unix socket path, or `tcp://host:port`
   * for `stats socket ipv4@host:port level admin`.
   */
  socket: string;
  /** The backend that lists every instance as a server named by the instance's id. */
  backend: string;
  /** How long removed servers may take to finish their requests in flight. @default 30000 */
  drainTimeoutMs?: number;
  /** How long the states set may take to read back. @default 5000 */
  confirmTimeoutMs?: number;
  /** Between two reads of the states or the sessions. @default 50 */
  pollIntervalMs?: number;
  /** Bounds each runtime API command. @default 5000 */
  commandTimeoutMs?: number;
}

/**
 * A nodrop Proxy for HAProxy, through its runtime API: a server leaves the pool with `drain` (no new
 * requests, those in flight finish), becomes `maint` once it has no session left, and comes back
 * with `ready`. HAProxy is never reloaded, so there is no old routing that outlives the change: the
 * drain is the wait for the removed servers' requests in flight.
 */
export function haproxyProxy(options: HaproxyProxyOptions): Proxy {
  const { backend } = options;
  if (!SAFE_NAME.test(backend)) {
    throw new NodropError("E_PROXY_SETUP", `haproxy backend ${JSON.stringify(backend)}: only letters, digits, '.', '_' and '-' (starting with a letter or digit)`);
  }
  const drainTimeout = options.drainTimeoutMs ?? 30_000;
  const confirmTimeout = options.confirmTimeoutMs ?? 5000;
  const pollInterval = options.pollIntervalMs ?? 50;
  const api: RuntimeApi = runtimeApi({ socket: options.socket, timeoutMs: options.commandTimeoutMs ?? 5000 });
  let generation = 0;
  let queue: Promise<unknown> = Promise.resolve();

  /** The backend's servers by name; a missing backend is a setup problem. */
  const readStates = async (signal?: AbortSignal): Promise<Map<string, ServerState>> => {
    try {
      return new Map((await api.serversState(backend, signal)).map((s) => [s.name, s]));
    } catch (error) {
      if (error instanceof RuntimeApiRefusal) {
        throw new NodropError("E_PROXY_SETUP", `HAProxy at ${options.socket} has no backend "${backend}" (${error.answer}): declare it with one server per instance, named by the instance id`, { cause: error });
      }
      throw error;
    }
  };

  const setState = async (server: string, state: AdminState) => {
    try {
      await api.setState(backend, server, state);
    } catch (error) {
      if (error instanceof RuntimeApiRefusal) {
        const hint = /permission denied/i.test(error.answer) ? ` (the stats socket ${options.socket} needs \`level admin\`)` : "";
        throw new NodropError("E_PROXY_RELOAD", `${error.message}${hint}`, { instance: server, cause: error });
      }
      throw error;
    }
  };

  /** Polls until `done` holds or the deadline passes; resolves with whether it held. */
  const until = async (timeoutMs: number, done: () => Promise<boolean>): Promise<boolean> => {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (await done()) return true;
      if (performance.now() > deadline) return false;
      await sleep(pollInterval);
    }
  };

  /** Sessions and queued requests still on these servers. */
  const busy = async (servers: ReadonlySet<string>): Promise<Map<string, number>> => {
    const left = new Map<string, number>();
    for (const s of await api.stat(backend)) if (servers.has(s.name) && s.sessions + s.queued > 0) left.set(s.name, s.sessions + s.queued);
    return left;
  };

  /**
   * Waits until none of the servers has a session, seen twice in a row: a request HAProxy assigned
   * to a server just before it left the pool shows up in the next read at the latest.
   */
  const drain = async (servers: ReadonlySet<string>): Promise<Map<string, number>> => {
    let left = new Map<string, number>();
    let quiet = 0;
    const deadline = performance.now() + drainTimeout;
    while (servers.size > 0) {
      left = await busy(servers);
      quiet = left.size === 0 ? quiet + 1 : 0;
      if (quiet >= 2) break;
      if (performance.now() > deadline) return left;
      await sleep(pollInterval);
    }
    return new Map();
  };

  const sessionsOn = (left: ReadonlyMap<string, number>) => [...left].map(([name, n]) => `${name} (${n} session${n === 1 ? "" : "s"})`).join(", ");

  /**
   * Puts servers changed before a failure back the way they were; one that was out of the pool
   * is drained before it is put back into maint. Best effort: says what could not be restored.
   */
  const restore = async (changed: ReadonlyMap<string, AdminState>): Promise<string> => {
    const problems: string[] = [];
    const back = async (server: string, state: AdminState) => setState(server, state).catch((error: unknown) => problems.push(`${server}: ${(error as Error).message}`));
    for (const [server, was] of changed) await back(server, was === "ready" ? "ready" : "drain");
    const out = new Set([...changed].filter(([, was]) => was === "maint").map(([server]) => server));
    const left = await drain(out).catch(() => out);
    for (const server of out) if (!left.has(server)) await back(server, "maint");
    return problems.length ? `; could not restore ${problems.join("; ")}` : "";
  };

  const apply = async (routing: Routing, instances: readonly ProxyInstance[], context: ProxyContext): Promise<ProxyApplyResult> => {
    throwIfAborted(context.signal);
    const unsupported = unsupportedFeatures(routing);
    if (unsupported.length > 0) {
      throw new NodropError(
        "E_PROXY_SETUP",
        `the haproxy adapter cannot put this routing into effect: it does not support ${unsupported.join(", ")} (capabilities: versionPinning, timedSwitch and affinity are false); nothing was changed`,
      );
    }
    for (const instance of instances) {
      if (!SAFE_NAME.test(instance.id)) {
        throw new NodropError("E_PROXY_SETUP", `instance id ${JSON.stringify(instance.id)} cannot name a HAProxy server in a runtime API command: only letters, digits, '.', '_' and '-'; nothing was changed`, { instance: instance.id });
      }
    }
    validateRouting(routing, new Set(instances.map((i) => i.id)));
    // Without pins or a switch, the default pool is the only one any request reaches.
    const pool = new Set(routing.pools[routing.defaultPool]);

    // Every instance must be a server of the backend, at its address, before anything changes.
    const before = await readStates(context.signal);
    for (const instance of instances) {
      const server = before.get(instance.id);
      if (!server) {
        throw new NodropError(
          "E_PROXY_SETUP",
          `HAProxy backend "${backend}" has no server named "${instance.id}" for instance ${instance.id} (${instance.address}:${instance.port}): add \`server ${instance.id} ${instance.address}:${instance.port}\` to it; nothing was changed`,
          { instance: instance.id },
        );
      }
      if (server.port !== instance.port || server.address !== instance.address) {
        throw new NodropError(
          "E_PROXY_SETUP",
          `HAProxy server ${backend}/${instance.id} points at ${server.address}:${server.port}, but instance ${instance.id} is ${instance.address}:${instance.port}; nothing was changed`,
          { instance: instance.id },
        );
      }
    }
    const removed = new Set(instances.map((i) => i.id).filter((id) => !pool.has(id)));
    const toReady = [...pool].filter((id) => before.get(id)!.admin !== "ready");
    const toDrain = [...removed].filter((id) => before.get(id)!.admin === "ready");

    // From here on, no abort until the change is confirmed or undone: a half-applied change is worse than a late stop.
    // Servers join before others leave, so capacity only dips by what the routing removes.
    const t0 = performance.now();
    const changed = new Map<string, AdminState>();
    let after = before;
    const confirmed = async () => {
      const now = (after = await readStates());
      return [...pool].every((id) => now.get(id)?.admin === "ready") && [...removed].every((id) => now.get(id)?.admin !== "ready");
    };
    try {
      for (const id of toReady) {
        changed.set(id, before.get(id)!.admin);
        await setState(id, "ready");
      }
      for (const id of toDrain) {
        changed.set(id, "ready");
        await setState(id, "drain");
      }
      if (!(await until(confirmTimeout, confirmed))) {
        throw new NodropError("E_PROXY_RELOAD", `HAProxy did not show the new server states within ${confirmTimeout}ms`);
      }
    } catch (error) {
      const message = (error as Error).message;
      const undone = await restore(changed);
      throw new NodropError(NodropError.is(error) ? error.code : "E_PROXY_RELOAD", `${message}; the previous server states were restored${undone}`, {
        instance: NodropError.is(error) ? error.instance : undefined,
        cause: error,
      });
    }
    const confirmMs = performance.now() - t0;
    const down = [...pool].filter((id) => after.get(id)?.operational !== "running");
    if (down.length > 0) context.log?.(`haproxy: ${down.join(", ")} in the pool but not up by HAProxy's own health check`);

    // HAProxy has no old routing that lives on: what can still reach a removed server is a request in flight.
    // Failures from here on leave the new routing in force: E_PROXY_DRAIN is the code that says so.
    const inForce = (error: unknown) =>
      new NodropError("E_PROXY_DRAIN", `HAProxy: the new routing is in force (the removed servers get no new requests), but ${(error as Error).message}`, { cause: error });
    const d0 = performance.now();
    const left = await drain(removed).catch((error: unknown) => {
      throw inForce(error);
    });
    const drainMs = performance.now() - d0;
    if (left.size > 0) {
      throw new NodropError(
        "E_PROXY_DRAIN",
        `HAProxy: ${sessionsOn(left)} still in flight after ${drainTimeout}ms; the new routing is in force (those servers stay in drain and get no new requests), but stopping them now would cut those requests`,
        { instance: [...left.keys()][0] },
      );
    }
    // maint, not drain, while an instance is down: HAProxy stops health-checking it and sends it nothing, persistence included.
    try {
      for (const id of removed) if (before.get(id)!.admin !== "maint") await setState(id, "maint");
      const settled = await until(confirmTimeout, async () => {
        const now = await readStates();
        return [...removed].every((id) => now.get(id)?.admin === "maint");
      });
      if (!settled) throw new Error(`HAProxy did not show ${[...removed].join(", ")} in maint within ${confirmTimeout}ms`);
    } catch (error) {
      throw inForce(error);
    }
    generation += 1;
    return { generation: String(generation), confirmMs, drainMs };
  };

  return {
    name: NAME,
    capabilities: HAPROXY_CAPABILITIES,
    async check(context = {}): Promise<ProxyCheck> {
      const details: string[] = [];
      let ok = true;
      try {
        const [version, level] = [await api.version(context.signal), await api.level(context.signal)];
        details.push(`HAProxy ${version ?? "(version unknown)"}, runtime API at ${options.socket}, level ${level}`);
        if (level !== "admin") {
          ok = false;
          details.push(`the stats socket ${options.socket} is at level ${level}: declare it with \`stats socket ${options.socket} level admin\` to let nodrop set server states`);
        }
      } catch (error) {
        return { ok: false, details: [`cannot use HAProxy's runtime API at ${options.socket}: ${(error as Error).message}`] };
      }
      try {
        const servers = [...(await readStates(context.signal)).values()];
        if (servers.length === 0) {
          ok = false;
          details.push(`backend "${backend}" has no servers: list every instance as a server named by its id`);
        } else details.push(`backend "${backend}": ${servers.map((s) => `${s.name} ${s.admin}${s.operational === "running" ? "" : ` (${s.operational})`}`).join(", ")}`);
        const unnamed = servers.filter((s) => !SAFE_NAME.test(s.name)).map((s) => s.name);
        if (unnamed.length > 0) details.push(`note: ${unnamed.join(", ")} cannot be instance ids; nodrop leaves them as they are`);
        // At preflight the engine passes the fleet: every instance must be a server here, at its address.
        for (const instance of context.instances ?? []) {
          const server = servers.find((s) => s.name === instance.id);
          if (!server) {
            ok = false;
            details.push(`instance ${instance.id} (${instance.address}:${instance.port}) has no server in backend "${backend}": add \`server ${instance.id} ${instance.address}:${instance.port}\``);
          } else if (server.address !== instance.address || server.port !== instance.port) {
            ok = false;
            details.push(`server ${backend}/${instance.id} points at ${server.address}:${server.port}, but instance ${instance.id} is ${instance.address}:${instance.port}`);
          }
        }
      } catch (error) {
        ok = false;
        details.push((error as Error).message);
      }
      return { ok, details };
    },
    apply(routing, instances, context = {}) {
      // One change at a time: two overlapping applies would drain each other's servers.
      const next = queue.then(() => apply(routing, instances, context));
      queue = next.catch(() => undefined);
      return next;
    },
    async current(context = {}) {
      // What is in the pool is what HAProxy sends new requests to: servers in ready. With none, an
      // empty pool (nothing routed) rather than undefined, which the engine reads as "all serving".
      const states = await readStates(context.signal);
      return singlePool([...states.values()].filter((s) => s.admin === "ready" && SAFE_NAME.test(s.name)).map((s) => s.name));
    },
  };
}

/** What this adapter cannot express in HAProxy's server states, by the routing field that asks for it. */
function unsupportedFeatures(routing: Routing): string[] {
  const found: string[] = [];
  const pins = Object.entries(routing.pins);
  if (pins.length > 0) found.push(`version pins (pins: ${pins.map(([version, pool]) => `${version} -> ${pool}`).join(", ")})`);
  if (routing.switchDefault) found.push(`a timed switch of the default pool (switchDefault to "${routing.switchDefault.to}")`);
  if (routing.affinity) found.push(`instance affinity (affinity on ${routing.affinity.key})`);
  // Other pools are fine once pins and switches are refused: nothing routes to them, so their
  // instances are out like any other (half-split's first routing without pins is { a, b }, default b).
  return found;
}

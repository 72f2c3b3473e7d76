/**
 * One error type for every package, told apart by string codes (changesets style).
 * The brand survives two copies of core being loaded, where `instanceof` would not.
 */
export type NodropErrorCode =
  | "E_CONFIG"
  | "E_PLUGIN"
  | "E_ARGS"
  | "E_TEMPLATE"
  | "E_EXEC"
  | "E_TIMEOUT"
  | "E_PREFLIGHT"
  | "E_PLAN"
  | "E_HEALTHCHECK"
  | "E_INSTANCE"
  | "E_PROXY_SETUP"
  | "E_PROXY_RENDER"
  | "E_PROXY_TEST"
  | "E_PROXY_RELOAD"
  | "E_PROXY_DRAIN"
  /** Several proxies in front of one fleet route differently (a deploy stopped between them). */
  | "E_PROXY_DISAGREE"
  | "E_SSH_CONNECT"
  | "E_SSH_HOSTKEY"
  | "E_SSH_AUTH"
  /** The connection dropped while a command ran: whether it took effect is unknown. */
  | "E_SSH_DROPPED"
  | "E_LOCK"
  | "E_JOURNAL"
  /** nodrop's state directory on the proxy host, or a file in it, is unsafe to use (a link, another owner). */
  | "E_STATE"
  /** The verify probe saw more failures or regressions than allowed. */
  | "E_VERIFY"
  /** A release could not be put on a host (upload, checksum, unpack, prepare), or is not there to use. */
  | "E_RELEASE"
  /** A hook (preDeploy, beforeBatch, ...) failed or could not run. */
  | "E_HOOK"
  /** A canary's gate saw the new version do worse than the old one (or too few requests to tell). */
  | "E_CANARY"
  | "E_ABORTED";

const BRAND = Symbol.for("@nodrop/core/NodropError");

/**
 * Which routing a failed proxy change left in force: the one before the change (the adapter
 * undid it, or never got as far as changing anything), the new one (it took effect, and what
 * failed came after), or unknown (it could not tell, e.g. the connection to the proxy host
 * dropped before the change was confirmed or undone). The engine reads the routing back from
 * the proxy when it is unknown, and treats an error that does not say as unknown.
 */
export type RoutingInForce = "previous" | "new" | "unknown";

export interface NodropErrorOptions extends ErrorOptions {
  /** The instance the error is about, when there is one. */
  instance?: string | undefined;
  /** Config paths with their problem, for E_CONFIG. */
  issues?: readonly ConfigIssue[] | undefined;
  /** For a failed Proxy.apply(): which routing is in force now. */
  routingInForce?: RoutingInForce | undefined;
}

export interface ConfigIssue {
  path: string;
  message: string;
}

export class NodropError extends Error {
  readonly code: NodropErrorCode;
  readonly instance: string | undefined;
  readonly issues: readonly ConfigIssue[];
  readonly routingInForce: RoutingInForce | undefined;
  readonly [BRAND] = true;

  constructor(code: NodropErrorCode, message: string, options: NodropErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "NodropError";
    this.code = code;
    this.instance = options.instance;
    this.issues = options.issues ?? [];
    this.routingInForce = options.routingInForce;
  }

  static is(error: unknown): error is NodropError {
    return typeof error === "object" && error !== null && (error as Record<symbol, unknown>)[BRAND] === true;
  }
}

/** Wraps anything thrown into a NodropError, keeping the original as `cause`. */
export function toNodropError(error: unknown, code: NodropErrorCode, context?: string): NodropError {
  if (NodropError.is(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new NodropError(code, context ? `${context}: ${message}` : message, { cause: error });
}

export function abortError(signal: AbortSignal | undefined): NodropError {
  const reason = signal?.reason;
  // A reason that is already ours says what stopped the deploy (a lock taken over: E_LOCK).
  if (NodropError.is(reason)) return reason;
  const detail = reason instanceof Error ? reason.message : typeof reason === "string" ? reason : "aborted";
  return new NodropError("E_ABORTED", `deploy aborted: ${detail}`);
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

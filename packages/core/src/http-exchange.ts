import http from "node:http";
import https from "node:https";
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";

export interface ExchangeTarget {
  /** Default "http:"; with "https:" the agent must be an https.Agent. */
  protocol?: "http:" | "https:";
  hostname: string;
  port: number;
  method: "GET" | "POST";
  path: string;
  headers: OutgoingHttpHeaders;
  body?: string;
  localAddress?: string;
}

export interface ExchangeResult {
  /** 0 when no response (headers) arrived. */
  status: number;
  headers?: IncomingHttpHeaders;
  /** Error code when the exchange failed without a complete response. */
  error?: string;
  /**
   * The request went out on a reused keep-alive socket that was closed (ECONNRESET / socket hang
   * up / EPIPE) before any response byte arrived: safe to retry once when idempotent.
   */
  staleSocket: boolean;
}

const RESET_CODES = new Set(["ECONNRESET", "EPIPE"]);

function errorCode(err: unknown): string {
  if (err && typeof err === "object") {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code !== "") return code;
    const message = (err as { message?: unknown }).message;
    if (typeof message === "string" && message !== "") return message;
  }
  return "EUNKNOWN";
}

function isReset(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as { message?: unknown } | null)?.message;
  return (typeof code === "string" && RESET_CODES.has(code)) || message === "socket hang up";
}

function codedError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

const noop = () => {};

/**
 * One HTTP exchange: sends the request, reads the whole response body, and settles (never
 * rejects) with the outcome. A timeout destroys the request and is reported as ETIMEDOUT.
 * It tells a stale keep-alive socket apart from any other failure, so callers can resend the way
 * browsers do (the load generator and the verify probe count failures by the same rule).
 */
export function exchange(agent: http.Agent, target: ExchangeTarget, timeoutMs: number): Promise<ExchangeResult> {
  return new Promise((resolve) => {
    let settled = false;
    let status = 0;
    let headers: IncomingHttpHeaders | undefined;
    let socket: Socket | undefined;
    let bytesBefore = 0;
    let req: http.ClientRequest | undefined;

    const finish = (error?: unknown, staleSocket = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const result: ExchangeResult = { status, staleSocket };
      if (headers) result.headers = headers;
      if (error !== undefined) result.error = errorCode(error);
      resolve(result);
    };

    const options: http.RequestOptions = {
      agent,
      hostname: target.hostname,
      port: target.port,
      method: target.method,
      path: target.path,
      headers: target.headers,
    };
    if (target.localAddress !== undefined) options.localAddress = target.localAddress;

    const timer = setTimeout(() => {
      const err = codedError("ETIMEDOUT", `request timed out after ${timeoutMs}ms`);
      finish(err);
      req?.destroy(err);
    }, Math.max(1, timeoutMs));

    const onResponse = (res: http.IncomingMessage): void => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on("data", noop); // consume the body so the socket can be reused
      res.on("end", () => finish());
      res.on("error", (err) => finish(err));
      res.on("close", () => {
        if (!res.complete) finish(codedError("EABORTED", "response aborted before it was complete"));
      });
    };

    try {
      req = (target.protocol === "https:" ? https : http).request(options, onResponse);
    } catch (err) {
      finish(err); // e.g. an invalid header value or local address
      return;
    }
    const request = req;
    request.on("socket", (s) => {
      socket = s as Socket;
      bytesBefore = socket.bytesRead;
    });
    request.on("error", (err) => {
      const stale =
        headers === undefined &&
        request.reusedSocket &&
        isReset(err) &&
        socket !== undefined &&
        socket.bytesRead === bytesBefore;
      finish(err, stale);
    });
    request.on("close", () => {
      // Fallback: closed without a response and without an error (the response's own events
      // settle the exchange once headers have arrived).
      if (!settled && headers === undefined) finish(codedError("ECONNRESET", "connection closed before the response completed"));
    });

    request.end(target.body);
  });
}

/** Destroys the agent's idle keep-alive sockets, so the next request opens a fresh connection. */
export function dropIdleSockets(agent: http.Agent): void {
  for (const list of Object.values(agent.freeSockets)) {
    for (const s of list ?? []) s.destroy();
  }
}

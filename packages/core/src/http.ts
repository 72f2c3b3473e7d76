// @nodrop/core/http: the HTTP client the verify probe and nodrop's load generator share (one
// exchange per request on a fresh or kept-alive socket, a browser's one resend, a cookie jar).
// It is kept off the main entry, whose surface is the contract adapters and strategies build on.
export { exchange, dropIdleSockets } from "./http-exchange.js";
export type { ExchangeTarget, ExchangeResult } from "./http-exchange.js";
export { CookieJar } from "./cookie-jar.js";

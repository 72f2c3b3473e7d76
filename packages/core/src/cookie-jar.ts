/**
 * Minimal per-client cookie jar: stores `name=value` from Set-Cookie, sends them back in one
 * Cookie header. Attributes are ignored, except that `Max-Age<=0` or an `Expires` in the past
 * deletes the cookie (that is how servers log a user out).
 */
export class CookieJar {
  readonly #cookies = new Map<string, string>();

  /** Applies the Set-Cookie header(s) of a response. */
  store(setCookie: string | readonly string[] | undefined, now: number = Date.now()): void {
    if (setCookie === undefined) return;
    for (const line of typeof setCookie === "string" ? [setCookie] : setCookie) this.#storeOne(line, now);
  }

  #storeOne(line: string, now: number): void {
    const [pair = "", ...attributes] = line.split(";");
    const eq = pair.indexOf("=");
    if (eq <= 0) return;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (name === "") return;
    let expired = false;
    for (const attribute of attributes) {
      const aeq = attribute.indexOf("=");
      const key = (aeq < 0 ? attribute : attribute.slice(0, aeq)).trim().toLowerCase();
      const val = aeq < 0 ? "" : attribute.slice(aeq + 1).trim();
      if (key === "max-age") {
        const seconds = Number(val);
        if (val !== "" && Number.isFinite(seconds) && seconds <= 0) expired = true;
      } else if (key === "expires") {
        const at = Date.parse(val);
        if (Number.isFinite(at) && at <= now) expired = true;
      }
    }
    if (expired) this.#cookies.delete(name);
    else this.#cookies.set(name, value);
  }

  /** Value of one cookie, if present. */
  get(name: string): string | undefined {
    return this.#cookies.get(name);
  }

  get size(): number {
    return this.#cookies.size;
  }

  /** The Cookie request header value, or undefined when the jar is empty. */
  header(): string | undefined {
    if (this.#cookies.size === 0) return undefined;
    return Array.from(this.#cookies, ([name, value]) => `${name}=${value}`).join("; ");
  }

  clear(): void {
    this.#cookies.clear();
  }
}

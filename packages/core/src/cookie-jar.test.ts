import { describe, expect, it } from "vitest";
import { CookieJar } from "./cookie-jar.js";

describe("CookieJar", () => {
  it("stores name=value, sends them back, deletes expired cookies", () => {
    const jar = new CookieJar();
    expect(jar.header()).toBeUndefined();
    jar.store(["sid=abc; Path=/; HttpOnly", "theme=dark"]);
    expect(jar.header()).toBe("sid=abc; theme=dark");
    jar.store("sid=def; Max-Age=3600");
    expect(jar.get("sid")).toBe("def");
    jar.store("theme=; Max-Age=0");
    expect(jar.get("theme")).toBeUndefined();
    jar.store("sid=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
    expect(jar.size).toBe(0);
    jar.store("broken");
    expect(jar.size).toBe(0);
  });
});

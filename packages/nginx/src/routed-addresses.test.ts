import { singlePool } from "@nodrop/core";
import { describe, expect, it } from "vitest";
import { parseServerLines, routedAddressProblems } from "./nginx.js";
import { renderNginxConfig } from "./render.js";

const spec = (port: number, address = "127.0.0.1") => ({ id: `web-${port}`, host: "local", address, port });
const render = (instances: ReturnType<typeof spec>[], ids = instances.map((i) => i.id)) =>
  renderNginxConfig({ name: "web", routing: singlePool(ids), instances, generation: 3, versionCookie: "nodrop_version" });

describe("routedAddressProblems: the include file's server lines against the config", () => {
  it("none when every instance is routed where the config says", () => {
    const fleet = [spec(8011), spec(8012), spec(8013, "::1")];
    expect(routedAddressProblems(render(fleet), fleet)).toEqual([]);
  });

  it("an instance that moved to another port is shown with both addresses", () => {
    const text = render([spec(8011), { ...spec(8012), port: 9012 }]);
    expect(routedAddressProblems(text, [spec(8011), spec(8012)])).toEqual(["web-8012: the proxy routes to 127.0.0.1:9012, the config says 127.0.0.1:8012"]);
  });

  it("an id the file still routes to that the config does not have", () => {
    const text = render([spec(8011), spec(8012)]);
    expect(routedAddressProblems(text, [spec(8011)])).toEqual(["web-8012: the proxy routes to 127.0.0.1:8012, the config has no instance web-8012"]);
  });

  it("an id the routing names without a server line; an instance out of the pool is no problem", () => {
    const fleet = [spec(8011), spec(8012), spec(8013)];
    const outOfPool = render(fleet, ["web-8011", "web-8012"]);
    expect(routedAddressProblems(outOfPool, fleet)).toEqual([]);
    const edited = outOfPool.replace(/^\s*server 127\.0\.0\.1:8012; # web-8012\n/m, "");
    expect(routedAddressProblems(edited, fleet)).toEqual(["web-8012: the routing in force names it but no server line routes to it, the config says 127.0.0.1:8012"]);
  });

  it("reads affinity rings: down servers are listed but not routed", () => {
    const fleet = [spec(8011), spec(8012)];
    const text = renderNginxConfig({
      name: "web",
      routing: { pools: { all: ["web-8011"] }, defaultPool: "all", pins: {}, affinity: { key: "$cookie_x", ring: ["web-8011", "web-8012"] } },
      instances: fleet,
      generation: 1,
      versionCookie: "nodrop_version",
    });
    const lines = parseServerLines(text);
    expect(lines.get("web-8012")).toEqual({ endpoints: new Set(["127.0.0.1:8012"]), live: false });
    expect(routedAddressProblems(text, [spec(8011)])).toEqual([]);
  });
});

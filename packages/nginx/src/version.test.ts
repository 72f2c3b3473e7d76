import { describe, expect, it } from "vitest";
import { compareVersions, nginxFeatures, parseNginxVersion } from "./version.js";

describe("parseNginxVersion", () => {
  it("reads the version from nginx -v output", () => {
    expect(parseNginxVersion("nginx version: nginx/1.22.1")).toBe("1.22.1");
    expect(parseNginxVersion("nginx version: nginx/1.29.6 (Ubuntu)\n")).toBe("1.29.6");
  });

  it("returns undefined when there is no version", () => {
    expect(parseNginxVersion("")).toBeUndefined();
    expect(parseNginxVersion("bash: nginx: command not found")).toBeUndefined();
    expect(parseNginxVersion("nginx version: openresty/1.21.4.1")).toBeUndefined();
  });
});

describe("compareVersions", () => {
  it("compares numerically, part by part", () => {
    expect(compareVersions("1.22.1", "1.22.1")).toBe(0);
    expect(compareVersions("1.27.10", "1.27.4")).toBe(1);
    expect(compareVersions("1.27.4", "1.27.10")).toBe(-1);
    expect(compareVersions("1.9.0", "1.22.0")).toBe(-1);
    expect(compareVersions("2.0.0", "1.99.99")).toBe(1);
    expect(compareVersions("1.27", "1.27.0")).toBe(0);
    expect(compareVersions("1.27", "1.27.1")).toBe(-1);
  });
});

describe("nginxFeatures", () => {
  it("1.22.1 (Debian 12) has none", () => {
    expect(nginxFeatures("1.22.1")).toEqual({ version: "1.22.1", keepaliveMinTimeout: false, resolve: false, stickyAndDrain: false });
  });

  it("1.27.3 has resolve only", () => {
    expect(nginxFeatures("1.27.3")).toEqual({ version: "1.27.3", keepaliveMinTimeout: false, resolve: true, stickyAndDrain: false });
  });

  it("1.27.4 adds keepalive_min_timeout but not sticky/drain", () => {
    expect(nginxFeatures("1.27.4")).toEqual({ version: "1.27.4", keepaliveMinTimeout: true, resolve: true, stickyAndDrain: false });
  });

  it("1.29.5 still lacks sticky/drain, 1.29.6 and later have everything", () => {
    expect(nginxFeatures("1.29.5").stickyAndDrain).toBe(false);
    expect(nginxFeatures("1.29.6")).toEqual({ version: "1.29.6", keepaliveMinTimeout: true, resolve: true, stickyAndDrain: true });
    expect(nginxFeatures("1.30.0")).toMatchObject({ keepaliveMinTimeout: true, resolve: true, stickyAndDrain: true });
  });
});

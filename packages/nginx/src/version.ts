/** nginx versions and the directives they bring; detected, never assumed (Debian 12 ships 1.22.1). */
export interface NginxFeatures {
  readonly version: string;
  /** `keepalive_min_timeout`, 1.27.4: keeps idle client connections across reloads. */
  readonly keepaliveMinTimeout: boolean;
  /** `server ... resolve`, 1.27.3 in open source. */
  readonly resolve: boolean;
  /** `sticky` and the `drain` server parameter, 1.29.6 in open source. */
  readonly stickyAndDrain: boolean;
}

/** Reads the version from `nginx -v` output ("nginx version: nginx/1.22.1"). */
export function parseNginxVersion(output: string): string | undefined {
  return /nginx\/(\d+\.\d+\.\d+)/.exec(output)?.[1];
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

export function nginxFeatures(version: string): NginxFeatures {
  const atLeast = (v: string) => compareVersions(version, v) >= 0;
  return { version, keepaliveMinTimeout: atLeast("1.27.4"), resolve: atLeast("1.27.3"), stickyAndDrain: atLeast("1.29.6") };
}

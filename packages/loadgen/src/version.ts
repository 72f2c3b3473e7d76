const CHUNKS = /\d+|\D+/g;

function compareDigits(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, "");
  const y = b.replace(/^0+(?=\d)/, "");
  if (x.length !== y.length) return x.length < y.length ? -1 : 1;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Natural comparison of version strings: runs of digits compare as numbers, everything else as
 * plain strings, so "v10" > "v9" > "v2" and "1.10.0" > "1.9.3". Returns <0, 0 or >0.
 */
export function compareVersions(a: string, b: string): number {
  if (a === b) return 0;
  const xs = a.match(CHUNKS) ?? [];
  const ys = b.match(CHUNKS) ?? [];
  const n = Math.min(xs.length, ys.length);
  for (let i = 0; i < n; i++) {
    const x = xs[i] as string;
    const y = ys[i] as string;
    if (x === y) continue;
    const xd = x.charCodeAt(0) >= 48 && x.charCodeAt(0) <= 57;
    const yd = y.charCodeAt(0) >= 48 && y.charCodeAt(0) <= 57;
    const c = xd && yd ? compareDigits(x, y) : x < y ? -1 : 1;
    if (c !== 0) return c;
  }
  if (xs.length !== ys.length) return xs.length < ys.length ? -1 : 1;
  return a < b ? -1 : 1; // e.g. "v01" vs "v1": equal numerically, still ordered deterministically
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * The longest duration nodrop accepts: 24h. Timers hold at most 2^31-1 ms (about 24.8 days) and
 * fire at once above it, so a larger value would end every command or wait immediately.
 */
export const MAX_DURATION_MS = 24 * 3_600_000;

/**
 * Parses "500ms", "30s", "2m", "1h" or a plain number of milliseconds, from 0 to 24h (MAX_DURATION_MS).
 * Returns undefined when invalid or out of range.
 */
export function parseDuration(value: unknown): number | undefined {
  let ms: number;
  if (typeof value === "number") ms = value;
  else if (typeof value === "string") {
    const match = /^(\d{1,15}(?:\.\d{1,15})?)(ms|s|m|h)$/.exec(value.trim());
    if (!match) return undefined;
    ms = Math.round(Number(match[1]) * UNITS[match[2]!]!);
  } else return undefined;
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DURATION_MS) return undefined;
  // -0 is 0.
  return ms === 0 ? 0 : ms;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes}m${Math.round((ms % 60_000) / 1000)}s`;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

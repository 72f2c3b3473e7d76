/**
 * Runs fn over items with at most `limit` at once, waits for all of them (so nothing is left
 * running behind a failure), and then throws the first error, if any.
 */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let firstError: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (error) {
        firstError ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (firstError) throw firstError.error;
}

/**
 * forEachLimit with the limit applied per host: hosts work side by side, and each runs at most
 * `limit` at once (an SSH connection's sessions, a host's CPU). Same error rule as forEachLimit.
 */
export async function forEachPerHost<T>(items: readonly T[], hostOf: (item: T) => string, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const byHost = new Map<string, T[]>();
  for (const item of items) {
    const host = hostOf(item);
    byHost.set(host, [...(byHost.get(host) ?? []), item]);
  }
  let firstError: { error: unknown } | undefined;
  await Promise.all(
    [...byHost.values()].map((group) =>
      forEachLimit(group, limit, fn).catch((error: unknown) => {
        firstError ??= { error };
      }),
    ),
  );
  if (firstError) throw firstError.error;
}

/**
 * Runs the promises at once (independent reads: over SSH, each is a round trip of its own) and
 * resolves with their values once all have settled; when some reject, rejects with the first of
 * those in the order given, so that which error a caller sees does not depend on which answered first.
 */
export async function allInOrder<T extends readonly unknown[]>(promises: { readonly [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

import { abortError } from "@nodrop/core";

/** Bounds concurrent work (SSH channels on one connection stay below the server's MaxSessions). */
export function semaphore(limit: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async acquire(signal?: AbortSignal): Promise<() => void> {
      if (active >= limit) {
        await new Promise<void>((resolve, reject) => {
          const go = () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          };
          const onAbort = () => {
            const index = waiting.indexOf(go);
            if (index >= 0) waiting.splice(index, 1);
            reject(abortError(signal));
          };
          signal?.addEventListener("abort", onAbort, { once: true });
          waiting.push(go);
        });
      }
      active += 1;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        active -= 1;
        waiting.shift()?.();
      };
    },
  };
}

import { readFile } from "node:fs/promises";
import { type Routing, servingInstances } from "@nodrop/core";

/** The routing nodrop's include file says is in force (the line the nginx adapter writes). */
export function routingIn(text: string): Routing | undefined {
  const line = /^# nodrop-routing: (\{.*\})$/m.exec(text)?.[1];
  return line === undefined ? undefined : (JSON.parse(line) as Routing);
}

/** Reads the include file every 10 ms until stopped: each distinct routing seen, and the fewest instances any of them served. */
export function sampleRouting(file: string): { stop: () => Promise<{ samples: number; routings: Routing[]; fewest: number }> } {
  let running = true;
  const routings: Routing[] = [];
  let samples = 0;
  let fewest = Number.POSITIVE_INFINITY;
  const loop = (async () => {
    while (running) {
      const routing = routingIn(await readFile(file, "utf8").catch(() => ""));
      if (routing) {
        samples += 1;
        fewest = Math.min(fewest, servingInstances(routing).size);
        if (JSON.stringify(routings.at(-1)) !== JSON.stringify(routing)) routings.push(routing);
      }
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { samples, routings, fewest };
    },
  };
}

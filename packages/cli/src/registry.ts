import type { Executor, Proxy, Schema, Strategy } from "@nodrop/core";
import { type NginxOptions, nginxOptionsSchema, nginxProxy } from "@nodrop/nginx";
import { halfSplitStrategy } from "@nodrop/strategy-half-split";
import { rollingStrategy } from "@nodrop/strategy-rolling";
import { stickyStrategy } from "@nodrop/strategy-sticky";

/**
 * Built-in adapters and strategies, resolved through static imports so that bundles
 * (the GitHub Action) carry them; nothing is looked up by name at run time.
 */
export interface StrategyEntry {
  readonly create: () => Strategy<any> & { optionsSchema: Schema<any> };
}

export interface ProxyEntry<Options = any> {
  readonly optionsSchema: Schema<Options>;
  readonly create: (input: { app: string; options: Options; executor: Executor }) => Proxy;
}

export const strategies: Readonly<Record<string, StrategyEntry>> = {
  rolling: { create: rollingStrategy },
  "half-split": { create: halfSplitStrategy },
  sticky: { create: stickyStrategy },
};

export const proxies: Readonly<Record<string, ProxyEntry>> = {
  nginx: {
    optionsSchema: nginxOptionsSchema,
    create: ({ app, options, executor }: { app: string; options: NginxOptions; executor: Executor }) => nginxProxy({ ...options, app, executor }),
  } satisfies ProxyEntry<NginxOptions>,
};

/** The built-in strategy of that name; own entries only, so `constructor` or `__proto__` is unknown. */
export function findStrategy(name: string): StrategyEntry | undefined {
  return Object.hasOwn(strategies, name) ? strategies[name] : undefined;
}

/** The built-in proxy adapter of that type; own entries only, so `toString` or `__proto__` is unknown. */
export function findProxy(type: string): ProxyEntry | undefined {
  return Object.hasOwn(proxies, type) ? proxies[type] : undefined;
}

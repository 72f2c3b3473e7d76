import type { PluginKind, PluginOf } from "@nodrop/core";
import { nginxPlugin } from "@nodrop/nginx";
import { canaryAbortPlugin, canaryPlugin } from "@nodrop/strategy-canary";
import { blueGreenPlugin, halfSplitPlugin } from "@nodrop/strategy-half-split";
import { rollingPlugin } from "@nodrop/strategy-rolling";
import { stickyPlugin } from "@nodrop/strategy-sticky";

/**
 * The plugins nodrop ships, by their short names, through static imports: a bundle (the GitHub
 * Action) carries them, and nothing is looked up on disk for them. Anything else a config names is
 * resolved from the config's directory (resolve-plugin.ts).
 */
export const builtInPlugins: { readonly [K in PluginKind]: Readonly<Record<string, PluginOf<K>>> } = {
  strategy: { rolling: rollingPlugin, "half-split": halfSplitPlugin, "blue-green": blueGreenPlugin, sticky: stickyPlugin, canary: canaryPlugin, "canary-abort": canaryAbortPlugin },
  proxy: { nginx: nginxPlugin },
  // Hosts without `use` are reached over SSH (hosts.ts); an executor plugin is always named by file or package.
  executor: {},
};

/** The built-in plugin of that kind and short name; own entries only, so `constructor` or `__proto__` is unknown. */
export function builtInPlugin<K extends PluginKind>(kind: K, name: string): PluginOf<K> | undefined {
  const table = builtInPlugins[kind] as Readonly<Record<string, PluginOf<K>>>;
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

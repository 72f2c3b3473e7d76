import { execOrThrow, type Executor } from "./executor.js";
import { NodropError } from "./errors.js";
import { type TemplateSources, type TemplateValues, describeValue, renderTemplate } from "./template.js";
import { releasePath } from "./release-scripts.js";
import { slotInspectorOf } from "./slot-inspector.js";
import type { InstanceControl, InstanceSpec } from "./types.js";

export interface CommandInstanceOptions {
  spec: InstanceSpec;
  executor: Executor;
  commands: { stop: string; update: string; start: string };
  timeoutMs: number;
  /** The host's releases directory (the config's `release.dir`): `{release}` is `<dir>/<version>`. */
  releaseDir?: string | undefined;
}

/** An instance controlled by shell command templates run through an executor (local or SSH). */
export function commandInstance(options: CommandInstanceOptions): InstanceControl {
  const { spec, executor, commands, timeoutMs, releaseDir } = options;
  const of = `the instance spec of ${describeValue(spec.id)}`;
  const sources: TemplateSources = { id: of, host: of, address: of, port: of, version: `the deploy's step on ${describeValue(spec.id)}`, previous: `the version ${describeValue(spec.id)} reported before the deploy`, release: "release.dir and the version" };
  const run = async (kind: "stop" | "update" | "start", values: TemplateValues, port: number | undefined, signal: AbortSignal | undefined) => {
    // A slot's command gets that slot's port; only the instance's own ports are accepted.
    if (port !== undefined && port !== spec.port && !spec.slots?.includes(port)) {
      throw new NodropError("E_PLAN", `${kind} of ${spec.id} on port ${port}, which is not one of its slots`, { instance: spec.id });
    }
    // Every value is checked where the command is rendered, whichever caller (engine, plugin) passed it.
    // {release} is the version's directory; without release.dir (or a version) it has no value.
    const release = releaseDir !== undefined && values.version !== undefined ? { release: releasePath(releaseDir, String(values.version)) } : {};
    const command = renderTemplate(commands[kind], { id: spec.id, host: spec.host, address: spec.address, port: port ?? spec.port, ...values, ...release }, `commands.${kind}`, sources);
    try {
      await execOrThrow(executor, command, `${kind} of ${spec.id}`, { signal, timeoutMs, echo: true });
    } catch (error) {
      if (NodropError.is(error) && error.instance === undefined) {
        throw new NodropError(error.code === "E_EXEC" ? "E_INSTANCE" : error.code, error.message, { instance: spec.id, cause: error });
      }
      throw error;
    }
  };
  return {
    spec,
    stop: ({ version, port, signal }) => run("stop", version === undefined ? {} : { version }, port, signal),
    update: ({ version, previous, port, signal }) => run("update", previous === undefined ? { version } : { version, previous }, port, signal),
    start: ({ version, port, signal }) => run("start", { version }, port, signal),
    // One command per host for all its instances' slots (they share the executor).
    inspect: ({ idlePort, livePort, signal }) => slotInspectorOf(executor).inspect(spec.id, spec.address, { idlePort, livePort }, signal),
    async reach({ signal }) {
      const result = await executor.exec("true", { signal, timeoutMs: 30_000 }).catch((error: unknown) => {
        throw NodropError.is(error) ? new NodropError(error.code, error.message, { instance: spec.id, cause: error }) : error;
      });
      if (result.code !== 0) throw new NodropError("E_EXEC", `${executor.host} cannot run commands for ${spec.id} (exit ${result.code})`, { instance: spec.id });
    },
  };
}

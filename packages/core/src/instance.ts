import { execOrThrow, type Executor } from "./executor.js";
import { NodropError } from "./errors.js";
import { renderTemplate, type TemplateValues } from "./template.js";
import type { InstanceControl, InstanceSpec } from "./types.js";

export interface CommandInstanceOptions {
  spec: InstanceSpec;
  executor: Executor;
  commands: { stop: string; update: string; start: string };
  timeoutMs: number;
}

/** An instance controlled by shell command templates run through an executor (local or SSH). */
export function commandInstance(options: CommandInstanceOptions): InstanceControl {
  const { spec, executor, commands, timeoutMs } = options;
  const run = async (kind: "stop" | "update" | "start", values: TemplateValues, signal: AbortSignal | undefined) => {
    const command = renderTemplate(commands[kind], { id: spec.id, host: spec.host, address: spec.address, port: spec.port, ...values }, `commands.${kind}`);
    try {
      await execOrThrow(executor, command, `${kind} of ${spec.id}`, { signal, timeoutMs });
    } catch (error) {
      if (NodropError.is(error) && error.instance === undefined) {
        throw new NodropError(error.code === "E_EXEC" ? "E_INSTANCE" : error.code, error.message, { instance: spec.id, cause: error });
      }
      throw error;
    }
  };
  return {
    spec,
    stop: ({ version, signal }) => run("stop", version === undefined ? {} : { version }, signal),
    update: ({ version, previous, signal }) => run("update", previous === undefined ? { version } : { version, previous }, signal),
    start: ({ version, signal }) => run("start", { version }, signal),
  };
}

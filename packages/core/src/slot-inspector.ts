import { NodropError } from "./errors.js";
import type { Executor } from "./executor.js";
import { type SlotPair, inspectSlotsCommand, parseSlotInspections } from "./slot-inspection.js";
import type { SlotInspection } from "./types.js";

interface Request extends SlotPair {
  readonly id: string;
  readonly address: string;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (inspection: SlotInspection) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Runs the slot inspections a host's instances ask for in the same turn as one command: preflight
 * asks for every instance at once, and one `ss -p` and one login (over SSH, one channel) per host
 * cost far less than one per instance on a host that is busy serving. Requests are grouped by the
 * address they inspect; each gets its own result or its own error, naming its instance.
 */
export class SlotInspector {
  readonly #executor: Executor;
  #pending: Request[] = [];

  constructor(executor: Executor) {
    this.#executor = executor;
  }

  inspect(id: string, address: string, pair: SlotPair, signal: AbortSignal | undefined): Promise<SlotInspection> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ id, address, idlePort: pair.idlePort, livePort: pair.livePort, signal, resolve, reject });
      // The first request of a turn schedules the command; the others of that turn join it.
      if (this.#pending.length === 1) setImmediate(() => void this.#flush());
    });
  }

  async #flush(): Promise<void> {
    const batch = this.#pending;
    this.#pending = [];
    const byAddress = new Map<string, Request[]>();
    for (const request of batch) byAddress.set(request.address, [...(byAddress.get(request.address) ?? []), request]);
    await Promise.all([...byAddress].map(([address, requests]) => this.#run(address, requests)));
  }

  async #run(address: string, requests: readonly Request[]): Promise<void> {
    const signals = requests.map((r) => r.signal).filter((s): s is AbortSignal => s !== undefined);
    try {
      const result = await this.#executor.exec(inspectSlotsCommand(requests, address), { signal: signals.length > 0 ? AbortSignal.any(signals) : undefined, timeoutMs: 30_000 });
      const seen = result.code === 0 ? parseSlotInspections(result.stdout, address) : undefined;
      for (const request of requests) {
        const inspection = seen?.get(request.idlePort);
        if (inspection) request.resolve(inspection);
        else request.reject(new NodropError("E_PREFLIGHT", `cannot inspect port ${request.idlePort} on ${this.#executor.host} for ${request.id}: ${result.code === 0 ? "no answer for it" : result.stderr.trim() || `exit ${result.code}`}`, { instance: request.id }));
      }
    } catch (error) {
      for (const request of requests) request.reject(NodropError.is(error) ? new NodropError(error.code, error.message, { instance: request.id, cause: error }) : error);
    }
  }
}

const inspectors = new WeakMap<Executor, SlotInspector>();

/** The one inspector of an executor (a host's instances share theirs). */
export function slotInspectorOf(executor: Executor): SlotInspector {
  let inspector = inspectors.get(executor);
  if (!inspector) inspectors.set(executor, (inspector = new SlotInspector(executor)));
  return inspector;
}

import type { DeployListener } from "./events.js";
import type { InstanceOutcome, PhaseReport, RouteReport, StepTiming, VerifyReport } from "./report.js";
import { reachesInstance, sameRouting, servingInstances, singlePool } from "./routing.js";
import type { InstanceControl, ObservedInstance, Routing } from "./types.js";

/** What the engine knows of one instance during a deploy. */
export interface TrackedInstance {
  readonly control: InstanceControl;
  /** The version it ran before the deploy. */
  readonly from: string | undefined;
  /** The version it runs now, as far as nodrop knows. */
  version: string | undefined;
  /** Whether the deploy ran a command on it. */
  touched: boolean;
  outcome: InstanceOutcome;
  readonly steps: StepTiming[];
  error?: string;
}

/**
 * One deploy's state, in one place: the instances as nodrop knows them, the routing in force, and
 * what the report will say (routes, phases, the verify counts). The step executor, recovery and the
 * report read and change it; nothing else holds deploy state.
 */
export class DeployRun {
  readonly id: string;
  readonly startedAt = new Date();
  /** performance.now() at the start: phase and step times are measured from it. */
  readonly started = performance.now();
  readonly tracked = new Map<string, TrackedInstance>();
  readonly routes: RouteReport[] = [];
  readonly phases: PhaseReport[] = [];
  observed: ObservedInstance[] = [];
  verify: VerifyReport | undefined;
  /** Set once recovery begins: from then on the journal is best effort. */
  recovering = false;
  /**
   * The routings that may be in force: one when nodrop knows it, the previous and the new one when a
   * proxy change failed without saying which took effect (an instance either reaches is reachable).
   * Before preflight has read the proxy, none: every instance counts as serving.
   */
  private inForce: readonly Routing[] = [];

  readonly version: string;
  readonly instances: readonly InstanceControl[];
  private readonly listener: DeployListener;

  /** The deploy's version and any an interrupted deploy staged: their pins count only for instances on them. */
  readonly staged: readonly string[];

  constructor(version: string, instances: readonly InstanceControl[], listener: DeployListener, staged: readonly string[] = []) {
    this.version = version;
    this.staged = [version, ...staged.filter((v) => v !== version)];
    this.instances = instances;
    this.listener = listener;
    this.id = `${this.startedAt.toISOString()}-${process.pid}`;
  }

  emit: DeployListener = (event) => this.listener(event);

  /** Starts tracking from what preflight saw, with the routing it read (undefined: the proxy has none of ours, so all serve). */
  begin(observed: readonly ObservedInstance[], routing: Routing | undefined): void {
    this.observed = [...observed];
    this.inForce = [routing ?? singlePool(observed.filter((o) => o.inPool).map((o) => o.id))];
    for (const o of observed) {
      const control = this.instances.find((i) => i.spec.id === o.id)!;
      this.tracked.set(o.id, { control, from: o.version, version: o.version, touched: false, outcome: o.version === this.version ? "unchanged" : "not-reached", steps: [] });
    }
  }

  /** For a deploy refused before tracking began: the routing preflight could read, if any. */
  refusedBefore(routing: Routing | undefined): void {
    this.inForce = routing ? [routing] : [];
  }

  instance(id: string): TrackedInstance {
    const t = this.tracked.get(id);
    if (!t) throw new Error(`internal: instance ${id} is not tracked`);
    return t;
  }

  /** The routing in force, when it is known. */
  get routing(): Routing | undefined {
    return this.inForce.length === 1 ? this.inForce[0] : undefined;
  }

  get routingKnown(): boolean {
    return this.inForce.length <= 1;
  }

  /** Every routing that may be in force (one when known). */
  get possibleRoutings(): readonly Routing[] {
    return this.inForce;
  }

  routingApplied(routing: Routing): void {
    this.inForce = [routing];
  }

  /** A change to `routing` failed without saying whether it took effect: either may be in force. */
  routingUncertain(routing: Routing): void {
    this.inForce = [...this.inForce.filter((r) => !sameRouting(r, routing)), routing];
  }

  /** Instances any request can reach (everyone, before preflight read the proxy). */
  serving(): Set<string> {
    if (this.inForce.length === 0) return new Set(this.instances.map((i) => i.spec.id));
    const ids = new Set<string>();
    for (const r of this.inForce) for (const id of servingInstances(r)) ids.add(id);
    return ids;
  }

  /** Whether a request can still reach the instance, under any routing that may be in force (see {@link reachesInstance}). */
  reachable(id: string): boolean {
    if (this.inForce.length === 0) return true;
    const runs = this.tracked.get(id)?.version;
    return this.inForce.some((r) => reachesInstance(r, this.staged, id, runs));
  }

  /** Reached by the default pool, a default switch or the pin of another version, under a routing that may be in force. */
  routedRegardless(id: string): boolean {
    if (this.inForce.length === 0) return true;
    return this.inForce.some((r) => reachesInstance(r, this.staged, id, undefined));
  }
}

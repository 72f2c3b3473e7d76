import { SurgePipeline } from "./early-start.js";
import type { GateReport } from "./canary-gate.js";
import type { HookRun } from "./hooks.js";
import type { DeployListener } from "./events.js";
import type { InstanceOutcome, PhaseReport, RouteReport, StepTiming, VerifyReport } from "./report.js";
import { reachesInstance, reachesSlot, routedPort, sameRouting, servingInstances, singlePool } from "./routing.js";
import type { InstanceControl, ObservedInstance, Routing } from "./types.js";

/** What the engine knows of one instance during a deploy. */
export interface TrackedInstance {
  readonly control: InstanceControl;
  /** The version it ran before the deploy. */
  readonly from: string | undefined;
  /** The version its live slot runs now, as far as nodrop knows. */
  version: string | undefined;
  /** The port of the slot the routing in force serves it on (its only port when it has one slot). */
  port: number;
  /** With slots: the other slot, and what runs there as far as nodrop knows. */
  idle: IdleSlot | undefined;
  /** Whether the deploy ran a command on it. */
  touched: boolean;
  outcome: InstanceOutcome;
  readonly steps: StepTiming[];
  error?: string;
}

/** The slot of an instance that the routing in force does not serve. */
export interface IdleSlot {
  port: number;
  /** The version put in place there (undefined: none, or not known). */
  version: string | undefined;
  /** Whether a process runs there: undefined when nodrop does not know (something listened at preflight). */
  running: boolean | undefined;
  /** Whether this deploy started or left a process there (recovery stops it when nothing routes to it). */
  ours: boolean;
}

/** A proxy change that returned before its old routing drained (a background drain). */
export interface PendingDrain {
  /** The routings that may have been in force before the change: their generations are draining. */
  readonly replaced: readonly Routing[];
  /** Settles (never rejects) when the drain ended; `failure` says whether it failed. */
  readonly done: Promise<void>;
  settled: boolean;
  failure?: Error;
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
  /** The hooks that ran, in order. */
  readonly hooks: HookRun[] = [];
  /** A canary's gates, in order, with what each decided. */
  readonly gates: GateReport[] = [];
  /** Set once recovery begins: from then on the journal is best effort. */
  recovering = false;
  /** Background steps (an old slot's stop) still running, by instance, with the index of the phase that started them. */
  readonly background = new Map<string, { readonly task: Promise<void>; readonly phase: number }>();
  /** The index of the phase running now. */
  phaseIndex = 0;
  /** How many more earlier phases' old processes may still be stopping when a phase starts new ones (preflight's `extraOverlap`). */
  extraOverlap = 0;
  /** Surge's pipeline: the phases' steps that started early, until their phase takes them over. */
  readonly pipeline = new SurgePipeline();
  /** The first background step that failed: the deploy ends at the next phase boundary. */
  backgroundFailure: { error: Error; step: string; drain?: boolean } | undefined;
  /**
   * Whether the last proxy change finished with its old routing drained. After a failed change
   * (a drain that ran out, a reload restored after it was signalled) a generation of the proxy may
   * still route by a routing this run tried, so slots those served are not stopped.
   */
  drained = true;
  /** A background drain failed: set for good, since a later change's drain need not cover that generation. */
  backgroundDrainFailed = false;
  /** Proxy changes whose old routing is still draining in the background, with the routings they replaced. */
  readonly draining = new Set<PendingDrain>();
  /** `id:port` of every slot a routing of this run served or was about to serve (the one in force at the start included). */
  readonly routedSlots = new Set<string>();
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

  /**
   * Starts tracking from what preflight saw, with the routing it read (undefined: the proxy has none
   * of ours, so all serve) and any other that some proxy of a group has in force (`others`): until a
   * change is confirmed on all of them, an instance any of these reaches counts as reachable.
   */
  begin(observed: readonly ObservedInstance[], routing: Routing | undefined, others: readonly Routing[] = []): void {
    this.observed = [...observed];
    this.inForce = [routing ?? singlePool(observed.filter((o) => o.inPool).map((o) => o.id)), ...others];
    for (const o of observed) if (o.inPool) this.routedSlots.add(`${o.id}:${o.livePort ?? o.port}`);
    for (const o of observed) {
      const control = this.instances.find((i) => i.spec.id === o.id)!;
      const idle = o.idle ? { port: o.idle.port, version: o.idle.version, running: o.idle.free ? false : undefined, ours: false } : undefined;
      this.tracked.set(o.id, { control, from: o.version, version: o.version, port: o.livePort ?? o.port, idle, touched: false, outcome: o.version === this.version ? "unchanged" : "not-reached", steps: [] });
    }
    // The slots the other proxies serve are ones a generation of theirs may be draining on.
    for (const other of others) this.routingAttempted(other);
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
    for (const t of this.tracked.values()) {
      const port = routedPort(routing, t.control.spec, t.port);
      if (!t.idle || port === t.port) continue;
      // A swap: the slot that served is idle now, its process still running until it is stopped.
      const old = { port: t.port, version: t.version };
      t.port = t.idle.port;
      t.version = t.idle.version;
      t.idle = { port: old.port, version: old.version, running: true, ours: true };
      if (t.version === this.version) t.outcome = "updated";
    }
  }

  /** Records the slots a routing about to be applied serves (in any of its pools). */
  routingAttempted(routing: Routing): void {
    for (const [pool, ids] of Object.entries(routing.pools)) {
      for (const id of ids) {
        const t = this.tracked.get(id);
        if (t) this.routedSlots.add(`${id}:${routedPort(routing, t.control.spec, t.port, pool)}`);
      }
    }
  }

  /** The version the instance's slot on `port` runs, as far as nodrop knows. */
  versionAt(id: string, port: number): string | undefined {
    const t = this.instance(id);
    return port === t.port ? t.version : t.idle?.port === port ? t.idle.version : undefined;
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

  /**
   * Whether a request can still reach the instance (on its slot at `port`, by default the live one),
   * under any routing that may be in force (see {@link reachesInstance}).
   */
  reachable(id: string, port?: number): boolean {
    if (this.inForce.length === 0) return true;
    const t = this.tracked.get(id);
    if (!t) return this.inForce.some((r) => reachesInstance(r, this.staged, id, undefined));
    const at = port ?? t.port;
    return this.inForce.some((r) => reachesSlot(r, this.staged, t.control.spec, at, this.versionAt(id, at), t.port));
  }

  /** The proxy changes still draining (or whose drain failed) whose replaced routing serves the instance's slot at `port`. */
  drainsServing(id: string, port: number): PendingDrain[] {
    if (this.draining.size === 0) return [];
    const t = this.instance(id);
    const version = this.versionAt(id, port);
    return [...this.draining].filter((d) => d.replaced.some((r) => reachesSlot(r, this.staged, t.control.spec, port, version, t.port)));
  }

  /** Reached by the default pool, a default switch or the pin of another version, under a routing that may be in force. */
  routedRegardless(id: string): boolean {
    if (this.inForce.length === 0) return true;
    const t = this.instance(id);
    return this.inForce.some((r) => reachesSlot(r, this.staged, t.control.spec, t.port, undefined, t.port));
  }
}

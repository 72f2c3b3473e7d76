import type { ClockOffset } from "./clock.js";
import type { Executor } from "./executor.js";
import type { VerifyReport } from "./report.js";

/** An app process reachable at address:port, on a host that an Executor reaches. */
export interface InstanceSpec {
  /** Unique, safe in shell and nginx config ("web-8011"). */
  readonly id: string;
  /** Name of the host whose executor runs this instance's commands ("local", "web1"). */
  readonly host: string;
  /** The address nginx and the health check use (an IP literal). */
  readonly address: string;
  /** The port of its first slot (the one its id is named after). */
  readonly port: number;
  /**
   * Both slots' ports, when the instance has a spare port: a surge or blue-green deploy starts the
   * new version on the idle slot while the live one serves. The routing in force says which is live.
   */
  readonly slots?: readonly [number, number] | undefined;
}

/** What preflight saw of an instance before anything changed. */
export interface ObservedInstance extends InstanceSpec {
  /** The version it reported, when it answered its health check. */
  readonly version: string | undefined;
  readonly healthy: boolean;
  /** Whether the proxy routes to it now. An instance out of the pool can be changed right away. */
  readonly inPool: boolean;
  /** With slots: the port the routing in force serves it on (`port` is still its first slot's). */
  readonly livePort?: number | undefined;
  /**
   * With slots: the other slot, which nothing routes to, and whether something listens on it. When
   * what listens there answers the health check, `version` says which version: a process of this
   * app left by a deploy that did not finish (a surge plan stops it first).
   */
  readonly idle?: { readonly port: number; readonly free: boolean; readonly version?: string | undefined } | undefined;
}

/**
 * The routing a proxy must put into effect. Pools list live instances only (never `down`
 * siblings); clients pinned to a version (a cookie) go to that version's pool.
 */
export interface Routing {
  /** pool name -> instance ids; every pool is non-empty. */
  readonly pools: Readonly<Record<string, readonly string[]>>;
  /** The pool that takes requests of unpinned clients. */
  readonly defaultPool: string;
  /** version -> pool, for clients pinned to that version. */
  readonly pins: Readonly<Record<string, string>>;
  /**
   * A switch of the default pool at one instant, in every proxy worker at once, instead of at the
   * reload (where old and new workers overlap and disagree). The proxy picks the instant, at least
   * `afterMs` after this routing is confirmed, and apply() returns only once it has passed.
   */
  readonly switchDefault?: { readonly to: string; readonly afterMs: number };
  /**
   * Instance affinity: every pool balances by a consistent hash of `key` over the same `ring` of
   * instances (those not in the pool are listed as down), so a client keeps its instance while it
   * is in the pool, moves only while it is out, and comes back to it afterwards.
   */
  readonly affinity?: { readonly key: string; readonly ring: readonly string[] };
  /**
   * Instance id -> the port of the slot it is served on, for instances with two slots. An instance
   * with slots that is not listed is served on the slot it was live on (its first slot at first).
   */
  readonly slots?: Readonly<Record<string, number>>;
  /**
   * Pool -> instance id -> port, where a pool serves an instance on another slot than `slots` says:
   * blue-green's switch routing has the old slots in one pool and the new slots in another, so
   * that the timed switch flips between them. Only for proxies with the `poolSlots` capability.
   */
  readonly poolSlots?: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /**
   * A weighted split of the default pool's requests (a canary): a request whose client key hashes
   * into the first `percent` goes to pool `to`, the others to `defaultPool`. The hash is stable per
   * key, and growing `percent` keeps the clients already in it, so a client only ever moves to `to`.
   * Pinned clients still go to their version's pool. Only for proxies with the `split` capability.
   */
  readonly split?: { readonly key: string; readonly percent: number; readonly to: string };
}

/**
 * An instance as the proxy sees it: where it is and, when known, which version it runs. For an
 * instance with slots, `port` is the port the routing being applied serves it on, and `version` the
 * version that slot runs.
 */
export interface ProxyInstance extends InstanceSpec {
  readonly version?: string | undefined;
  /** With slots: the version each slot runs, by port (the one `port` names included), when known. */
  readonly versions?: Readonly<Record<string, string>> | undefined;
}

export interface ProxyCapabilities {
  /** Can route clients pinned to a version to that version's pool. */
  readonly versionPinning: boolean;
  /**
   * @deprecated Never read: every adapter's apply() must return only once nothing routes by the old
   * routing any more (that is what lets the engine stop an instance the routing left out).
   */
  readonly drainsOldRouting?: boolean;
  /** Supports `Routing.switchDefault`. */
  readonly timedSwitch: boolean;
  /** Supports `Routing.affinity`. */
  readonly affinity: boolean;
  /** Supports `Routing.poolSlots` (one instance on different ports in different pools). */
  readonly poolSlots?: boolean;
  /**
   * Honours `ProxyContext.backgroundDrain`: apply() can return once the new routing is confirmed,
   * with `drained` settling when nothing routes by the old one any more.
   */
  readonly backgroundDrain?: boolean;
  /** Supports `Routing.split` (a weighted share of the default pool's clients to another pool). */
  readonly split?: boolean;
  /** traffic() can count each instance's requests, 5xx answers and latency (a canary's analysis). */
  readonly traffic?: boolean;
}

export interface ProxyApplyResult {
  /** Identifies the proxy config now in force (nginx: the generation number). */
  readonly generation: string;
  /** Time from the change until the proxy was confirmed on the new routing. */
  readonly confirmMs: number;
  /** Time spent waiting for the old routing's workers to finish. */
  readonly drainMs: number;
  /**
   * Long-lived connections (WebSocket, server-sent events) to instances this routing removed that
   * were still open when the drain ceiling came; they end when those instances stop.
   */
  readonly cut?: number;
  /**
   * Only when the caller asked for `backgroundDrain` and the adapter can: settles once nothing
   * routes by the old routing any more (`drainMs` above is then 0), or rejects as apply() would
   * have for a failed drain (the new routing stays in force).
   */
  readonly drained?: Promise<ProxyDrainResult>;
  /**
   * Things the change did that people must know though it succeeded (nginx: a timed switch whose
   * old generation was not seen closed before its instant). One line each; the engine prints them
   * as warnings, with control characters made inert.
   */
  readonly warnings?: readonly string[];
}

/** How a drain left running after apply() ended. */
export interface ProxyDrainResult {
  readonly drainMs: number;
  readonly cut?: number;
}

export interface ProxyCheck {
  readonly ok: boolean;
  /** What is in place and what is missing, one line each. */
  readonly details: readonly string[];
}

export interface ProxyContext {
  readonly signal?: AbortSignal | undefined;
  readonly log?: ((message: string) => void) | undefined;
  /**
   * apply() only (capability `backgroundDrain`): return once the new routing is confirmed (and a
   * timed switch has passed) and let the old routing drain meanwhile, reported by `drained`. An
   * adapter without the capability ignores it and drains before it returns.
   */
  readonly backgroundDrain?: boolean | undefined;
  /**
   * apply() of a routing with `switchDefault` only: the switch instant, epoch ms on the proxy
   * host's own clock, given when several proxies must switch at the same instant (a proxy group
   * converts one instant with each host's measured offset). The adapter uses it instead of picking
   * one, and says so in `warnings` when its old routing was not done taking requests by then.
   */
  readonly switchAt?: number | undefined;
}

export interface ProxyCheckContext extends ProxyContext {
  /**
   * The fleet, when the caller knows it (preflight does): lets check() confirm that the proxy knows
   * every instance before anything changes, instead of the first apply() finding out.
   */
  readonly instances?: readonly InstanceSpec[] | undefined;
}

/**
 * A proxy adapter. apply() validates, puts the routing into effect, confirms it and waits
 * for the old routing to drain. When it fails, it undoes what it changed where it can and its
 * NodropError says which routing is in force (`routingInForce`: previous, new or unknown);
 * an error that does not say counts as unknown, and the engine then reads the routing back
 * with current() before it changes any instance.
 */
export interface Proxy {
  readonly name: string;
  readonly capabilities: ProxyCapabilities;
  /** Checks the one-time setup (nginx: the include and proxy_pass) without changing anything. */
  check(context?: ProxyCheckContext): Promise<ProxyCheck>;
  apply(routing: Routing, instances: readonly ProxyInstance[], context?: ProxyContext): Promise<ProxyApplyResult>;
  /** The routing currently in force, if this proxy wrote it. */
  current(context?: ProxyContext): Promise<Routing | undefined>;
  /**
   * Other routings the proxy may still route by than the one current() reads: a change that was
   * written but whose reload was never confirmed (a deploy killed in between) leaves the routing
   * before it. Preflight then counts them as possibly in force and puts current()'s into effect first.
   */
  alsoInForce?(context?: ProxyContext): Promise<readonly Routing[]>;
  /**
   * Its host's clock against this machine's (see measureClockOffset): several proxies switching at
   * one instant need it, and preflight refuses a plan with a timed switch when their clocks are too
   * far apart, or when a proxy of several cannot say.
   */
  clock?(context?: ProxyContext): Promise<ClockOffset>;
  /**
   * How far ahead this proxy would set a timed switch asked for `afterMs` ahead, from what it has
   * seen of its own reloads (it may need longer than asked). A group of proxies sets its one
   * instant from the slowest member's answer.
   */
  switchDelay?(afterMs: number): number;
  /**
   * The one-time setup (`nodrop init`): writes the proxy's own file for this routing when it does
   * not exist yet, without reloading, and says what the user must add to their config.
   */
  initialize?(routing: Routing, instances: readonly ProxyInstance[], context?: ProxyContext): Promise<{ wrote: boolean; file: string; instructions: readonly string[] }>;
  /**
   * What the proxy served since `cursor`, per upstream endpoint ("127.0.0.1:8011"), and the cursor
   * to read on from (capability `traffic`). Without a cursor: nothing counted, and the cursor at
   * the end of what it has now, so that a window starts at the call. A cursor is opaque to callers
   * and checked by the adapter, since it may come back from a journal.
   */
  traffic?(cursor: string | undefined, context?: ProxyContext): Promise<TrafficWindow>;
  dispose?(): Promise<void>;
}

/** What a proxy served in a window (see Proxy.traffic). */
export interface TrafficWindow {
  readonly cursor: string;
  /** endpoint ("address:port", IPv6 in brackets) -> counts of the requests it answered. */
  readonly endpoints: Readonly<Record<string, TrafficCounts>>;
  /**
   * Requests the proxy could not attribute to an endpoint (nginx: a pool with no live server left
   * logs its name, not an address), and how many of them were 5xx: a gate counts them against
   * the new version, since it cannot tell whose they were.
   */
  readonly unattributed?: { readonly requests: number; readonly errors: number } | undefined;
}

/** Requests, 5xx answers and a latency histogram (LATENCY_BUCKETS_MS: counts per bucket). */
export interface TrafficCounts {
  readonly requests: number;
  readonly errors: number;
  readonly latency: readonly number[];
}

export interface InstanceContext {
  readonly signal?: AbortSignal | undefined;
  /** The slot's port the command is for (`{port}`); the first slot's when not given. */
  readonly port?: number | undefined;
}

/** What a host shows of a slot before a deploy starts a process there (see InstanceControl.inspect). */
export interface SlotInspection {
  /** Nothing listens on the idle port, on the instance's address or a wildcard one. */
  readonly free: boolean;
  /** What listens there, when something does ("127.0.0.1:9011 (gunicorn, pid 123)"). */
  readonly listener?: string | undefined;
  /** Resident memory of the processes listening on the live port, when the host lets nodrop see them. */
  readonly liveRssBytes?: number | undefined;
  /** The host's MemAvailable. */
  readonly availableBytes?: number | undefined;
  /** `uid:name` of the process listening on the idle port, and of the live slot's, when the host lets nodrop see them. */
  readonly listenerOwner?: string | undefined;
  readonly liveOwner?: string | undefined;
}

/** Controls one instance: stop it, put a version in place, start it. */
export interface InstanceControl {
  readonly spec: InstanceSpec;
  stop(context: InstanceContext & { version: string | undefined }): Promise<void>;
  update(context: InstanceContext & { version: string; previous: string | undefined }): Promise<void>;
  start(context: InstanceContext & { version: string }): Promise<void>;
  /** Confirms, before anything changes, that the instance's host can be reached to run its commands. */
  reach?(context: InstanceContext): Promise<void>;
  /** On the instance's host: is the idle slot's port free, and what the overlap with the live slot costs. */
  inspect?(context: InstanceContext & { idlePort: number; livePort: number }): Promise<SlotInspection>;
}

/** Answers whether an instance is healthy and which version it runs, probed directly. */
export interface HealthCheck {
  /** One probe. */
  probe(instance: InstanceSpec, signal?: AbortSignal): Promise<HealthProbe>;
}

export interface HealthProbe {
  readonly ok: boolean;
  readonly version: string | undefined;
  /** What was seen, for messages ("status 503", "connection refused"). */
  readonly detail: string;
}

export type StepKind = "route" | "stop" | "update" | "start" | "check" | "soak" | "release" | "gate";

/**
 * A step on instances acts on their live slot, or with `slot: "idle"` on the slot nothing routes to
 * when the step runs (after a swap, that is the slot that was live). A `background` stop does not
 * hold up the steps after it: the engine waits for it before that instance's next step, and at the end.
 */
export type InstanceStep = { readonly kind: "stop" | "update" | "start" | "check"; readonly instances: readonly string[]; readonly slot?: "live" | "idle"; readonly background?: boolean };

/**
 * Puts a routing into effect. With `background`, the steps after it need not wait for the old
 * routing to drain (where the proxy can drain in the background): only a stop or an update of a
 * slot that a routing still draining serves waits for that drain, and the deploy ends after it.
 */
export type RouteStep = { readonly kind: "route"; readonly routing: Routing; readonly why: string; readonly background?: boolean };

/**
 * Puts the deploy's release on each host (the artifact sent once, the prepare command run once),
 * hosts side by side. The engine adds it, in a phase of its own before any other: no strategy plans it.
 */
export type ReleaseStep = {
  readonly kind: "release";
  readonly hosts: readonly string[];
  // It changes no instance. Code written before this step existed, reading an instance step's
  // fields after ruling out route and soak, keeps compiling and finds no instance here.
  readonly instances: readonly never[];
  readonly slot?: undefined;
  readonly background?: undefined;
};

/**
 * A canary's gate: the step's share of clients runs on the new version for `ms` while the engine
 * compares what the proxy saw of it with the old version (`analysis`), or simply waits (`analysis`
 * left out). A breach fails the phase, and the phase's failure rule puts every client back on the
 * old version. `weight` is the share the routing in force gives the new version, for the report.
 */
export type GateStep = {
  readonly kind: "gate";
  readonly name: string;
  readonly weight: number;
  readonly ms: number;
  readonly analysis?: CanaryAnalysis | undefined;
  /**
   * Waits for a person: the deploy stops here, paused, with its journal open, and `nodrop promote`
   * (a resume that counts this gate as passed) goes on, or `nodrop abort` goes back.
   */
  readonly manual?: boolean | undefined;
  // It changes no instance (as a release step): code that reads an instance step's fields after
  // ruling out route and soak keeps compiling and finds no instance here.
  readonly instances: readonly never[];
  readonly slot?: undefined;
  readonly background?: undefined;
};

/** The thresholds a canary's gate holds the new version to, against the old one in the same window. */
export interface CanaryAnalysis {
  /** Fewest requests the new version must answer before the gate can pass (and before a ratio counts). */
  readonly minRequests: number;
  /** Highest 5xx rate of the new version (0.01 = 1%) beyond the old version's own rate. */
  readonly maxErrorRateIncrease: number;
  /** Highest p99 latency of the new version as a multiple of the old version's. */
  readonly maxLatencyRatio: number;
  /** The old version's p99 counts as at least this (ms) in the ratio: below it, differences are noise. */
  readonly latencyFloorMs: number;
  /** How long a gate may wait for minRequests beyond `ms` before it fails as inconclusive. */
  readonly extraMs: number;
  /** How often the proxy's counts are read during the gate (a breach stops it at the next read). */
  readonly intervalMs: number;
}

export type PlanStep =
  | RouteStep
  | InstanceStep
  | ReleaseStep
  | GateStep
  | { readonly kind: "soak"; readonly ms: number };

/**
 * What the engine does when a phase fails:
 * - "revert": the phase's instances go back to the version they ran, are checked and rejoin;
 * - "isolate": they stay out of the pool and the routing already in force is kept.
 */
export type FailurePolicy = "revert" | "isolate";

export interface PlanPhase {
  readonly name: string;
  /** The instances this phase changes. */
  readonly instances: readonly string[];
  readonly steps: readonly PlanStep[];
  readonly onFailure: FailurePolicy;
  /**
   * Its leading steps on idle slots may start before its turn, once the phase before it has started
   * its own new processes (while that one checks them and swaps): nothing routes to those slots, and
   * the next batch need not wait for the check or the reload. A failure among them surfaces when
   * this phase begins. One more phase's new processes then overlap with old ones, which preflight's
   * memory check counts.
   */
  readonly prepareEarly?: boolean;
  /**
   * Set on the phases the engine adds before the strategy's (the release on the hosts, bringing
   * proxies together): they are not batches, so the batch hooks do not run for them.
   */
  readonly added?: "release" | "reconcile";
  /**
   * With onFailure "revert", set (even empty) for a phase whose failure must take back everything
   * its new version serves (a canary's abort): every client is routed to the instances outside
   * these and the phase's own, which then go back to the version they ran, serving or not. Lists
   * the instances earlier phases changed. An instance whose new version runs on its idle slot,
   * with its old process still running on the other, goes back by a swap in that same reload;
   * one that ran the new version before the deploy began goes back to the version most others ran.
   */
  readonly revertAlso?: readonly string[];
  /**
   * The old processes this phase's swaps leave on idle slots keep running past the next phase (a
   * canary keeps them until its gates are passed, so that its abort swaps back): preflight's
   * memory check counts them until the end.
   */
  readonly keepsOldSlots?: boolean;
}

export interface DeployPlan {
  readonly strategy: string;
  readonly version: string;
  readonly phases: readonly PlanPhase[];
  /** Lines for the user before anything runs (capacity during the deploy, skipped instances). */
  readonly notes: readonly string[];
  /**
   * How long the old slots the plan leaves running are kept for an instant rollback (ms). The
   * report says until when (`keptUntil`); whoever runs the deploy stops them after that, and the
   * next deploy stops any still running (a process of the app on an idle slot).
   */
  readonly keepOldMs?: number;
}

export interface PlanInput<Options> {
  readonly instances: readonly ObservedInstance[];
  readonly version: string;
  readonly proxy: ProxyCapabilities;
  readonly options: Options;
  /**
   * Resuming a deploy with gates (a canary): the phases whose gate it passed already, or that
   * `nodrop promote` let through. A strategy plans them again without their gate.
   */
  readonly passedGates?: readonly string[];
}

/** What a strategy is told when it picks the routing to restore after a failure. */
export interface RecoveryContext<Options = unknown> {
  /** The version being deployed. */
  readonly version: string;
  /** The versions the fleet ran before the deploy (every one older than `version`; no order among them). */
  readonly previous: readonly string[];
  /** Every instance of the fleet, healthy or not (an affinity ring spans them all). */
  readonly instances: readonly string[];
  readonly options: Options;
}

/** A strategy plans; it never does I/O. The engine applies its plan. */
export interface Strategy<Options = unknown> {
  readonly name: string;
  plan(input: PlanInput<Options>): DeployPlan;
  /**
   * The routing to restore after a failure, given the instances that are healthy and serving (with
   * the versions they run now). Defaults to one pool of all of them. Versions are names, not an
   * order (git SHAs do not sort by age): the context says which is the deploy's and which ran before.
   */
  recoveryRouting?(healthy: readonly ObservedInstance[], context: RecoveryContext<Options>): Routing;
  /** The routing of a fleet at rest (what `nodrop init` writes). Defaults to one pool of all. */
  steadyRouting?(ids: readonly string[], options: Options): Routing;
}

/** A host name -> executor lookup; instances and the proxy name hosts. */
export type ExecutorFor = (host: string) => Executor;

/**
 * Watches the site from the outside for the whole deploy (the config's `verify` section): the
 * engine starts it after planning, stops the deploy when a threshold is crossed, and puts its
 * counts in the report.
 */
export interface DeployVerifier {
  /** The page probed, as reports show it. */
  readonly url: string;
  /** Starts probing; rejects (with nothing changed) when the site does not answer now. */
  start(context: { version: string }): Promise<void>;
  /** Why the deploy must stop, once a threshold has been crossed. */
  breach(): string | undefined;
  /** Probes a little longer, stops, waits for requests in flight and returns the counts. */
  stop(): Promise<VerifyReport>;
}

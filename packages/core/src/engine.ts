import { forEachPerHost } from "./concurrency.js";
import { sleep } from "./duration.js";
import { NodropError, abortError, toNodropError } from "./errors.js";
import type { DeployListener } from "./events.js";
import { type WaitHealthyOptions, waitHealthy } from "./health.js";
import type { Journal } from "./journal.js";
import type { DeployReport, InstanceOutcome, InstanceReport, PhaseReport, RouteReport, StepTiming } from "./report.js";
import { servingInstances, singlePool, validateRouting } from "./routing.js";
import { isSafeName } from "./template.js";
import type {
  DeployPlan,
  DeployVerifier,
  HealthCheck,
  InstanceControl,
  ObservedInstance,
  PlanPhase,
  PlanStep,
  Proxy,
  Routing,
  StepKind,
  Strategy,
} from "./types.js";

export interface DeployOptions<StrategyOptions> {
  version: string;
  instances: readonly InstanceControl[];
  proxy: Proxy;
  strategy: Strategy<StrategyOptions>;
  strategyOptions: StrategyOptions;
  health: HealthCheck;
  healthWait: Omit<WaitHealthyOptions, "signal">;
  /** Most instance commands and checks at once on one host (hosts work side by side). */
  parallel?: number;
  signal?: AbortSignal;
  onEvent?: DeployListener;
  /** Bounds the recovery after a failure or an abort (default 5 minutes). */
  recoveryTimeoutMs?: number;
  /** Records every step before and after it runs; a step whose record cannot be written does not run. */
  journal?: Journal;
  /** Probes the site through the proxy for the whole deploy; crossing its threshold stops the deploy. */
  verify?: DeployVerifier;
}

interface Tracked {
  control: InstanceControl;
  from: string | undefined;
  version: string | undefined;
  touched: boolean;
  outcome: InstanceOutcome;
  steps: StepTiming[];
  error?: string;
}

/** Probes every instance directly: which version it runs and whether it is healthy. */
export async function observeInstances(
  instances: readonly InstanceControl[],
  health: HealthCheck,
  options: { parallel?: number; signal?: AbortSignal | undefined; serving?: ReadonlySet<string> | undefined } = {},
): Promise<ObservedInstance[]> {
  const observed = new Map<string, ObservedInstance>();
  await forEachPerHost(instances, (i) => i.spec.host, options.parallel ?? 8, async (instance) => {
    const probe = await health.probe(instance.spec, options.signal);
    // The version comes from the instance (through a health check that may be a plugin's): one that
    // is not a safe version string is unknown, so it never becomes `from`, `{previous}` or a pin.
    const version = probe.ok && isSafeName(probe.version) ? probe.version : undefined;
    observed.set(instance.spec.id, {
      ...instance.spec,
      version,
      healthy: probe.ok && version !== undefined,
      // Without a routing written by this proxy, everything counts as serving.
      inPool: options.serving ? options.serving.has(instance.spec.id) : true,
    });
  });
  return instances.map((i) => observed.get(i.spec.id)!);
}

/** Preflight and plan, touching nothing: what `nodrop plan` shows. */
export async function planDeploy<O>(options: Omit<DeployOptions<O>, "onEvent">): Promise<{ plan: DeployPlan; observed: ObservedInstance[] }> {
  const check = await options.proxy.check({ signal: options.signal, instances: options.instances.map((i) => i.spec) });
  if (!check.ok) {
    throw new NodropError("E_PROXY_SETUP", `proxy ${options.proxy.name} is not set up for nodrop:\n  ${check.details.join("\n  ")}`);
  }
  // Every host must be reachable (SSH host key, credentials) before the first proxy change. Once
  // per host: a host's instances share its executor, and a busy host pays for every login shell.
  const onePerHost = [...new Map(options.instances.map((i) => [i.spec.host, i] as const)).values()];
  await Promise.all(onePerHost.map((instance) => instance.reach?.({ signal: options.signal })));
  const routing = await options.proxy.current({ signal: options.signal });
  const observed = await observeInstances(options.instances, options.health, { ...options, serving: routing ? servingInstances(routing) : undefined });
  // An unhealthy instance out of the pool (a failed earlier deploy) is fine: the deploy repairs it.
  // One in the pool is a problem nodrop did not cause and must not hide.
  const unhealthy = observed.filter((i) => !i.healthy && i.inPool);
  if (unhealthy.length > 0) {
    throw new NodropError(
      "E_PREFLIGHT",
      `refusing to deploy: ${unhealthy.map((i) => `${i.id} (${i.address}:${i.port})`).join(", ")} in the pool but not healthy before the deploy; fix or remove ${unhealthy.length === 1 ? "it" : "them"} first`,
      { instance: unhealthy[0]!.id },
    );
  }
  if (!observed.some((i) => i.healthy && i.inPool)) {
    throw new NodropError("E_PREFLIGHT", "refusing to deploy: no instance is healthy and in the pool, so there is nothing to keep serving while others change");
  }
  const plan = options.strategy.plan({ instances: observed, version: options.version, proxy: options.proxy.capabilities, options: options.strategyOptions });
  const known = new Set(observed.map((i) => i.id));
  for (const phase of plan.phases) {
    for (const id of phase.instances) if (!known.has(id)) throw new NodropError("E_PLAN", `phase "${phase.name}" names unknown instance "${id}"`);
    const own = new Set(phase.instances);
    for (const step of phase.steps) {
      if (step.kind === "route") validateRouting(step.routing, known);
      else if (step.kind !== "soak") {
        // Recovery works per phase: a step may only touch the instances its phase declares.
        for (const id of step.instances) if (!own.has(id)) throw new NodropError("E_PLAN", `phase "${phase.name}" ${step.kind}s "${id}", which is not one of its instances`);
      }
    }
  }
  return { plan, observed };
}

/**
 * Applies a strategy's plan step by step. The failure rules live here, not in strategies:
 * a failed instance step reverts (or isolates) its phase and restores a routing of healthy
 * instances; a failed proxy change leaves the previous config in force and stops.
 */
export async function deploy<O>(options: DeployOptions<O>): Promise<DeployReport> {
  const startedAt = new Date();
  const started = performance.now();
  const emit = options.onEvent ?? (() => {});
  const parallel = options.parallel ?? 8;
  const signal = options.signal;
  const routes: RouteReport[] = [];
  const phases: PhaseReport[] = [];
  const tracked = new Map<string, Tracked>();
  let serving = new Set<string>();
  let observed: ObservedInstance[] = [];
  const deployId = `${startedAt.toISOString()}-${process.pid}`;
  // During recovery the journal is best effort: a full disk must not stop the fleet being restored.
  let journalRequired = true;
  const record = async (entry: Parameters<Journal["append"]>[0]) => {
    if (!options.journal) return;
    try {
      await options.journal.append(entry);
    } catch (error) {
      if (journalRequired) throw error;
    }
  };


  let verifying = false;
  const report = async (error?: NodropError, step?: string, recovery?: string): Promise<DeployReport> => {
    const verify = verifying ? await options.verify!.stop() : undefined;
    if (!error && verify?.breach) {
      // Crossed after the last step: every instance is done, but the deploy did not meet its bar.
      error = new NodropError("E_VERIFY", verify.breach);
      step = "verify";
    }
    const result: DeployReport = {
      ok: error === undefined,
      strategy: options.strategy.name,
      version: options.version,
      startedAt: startedAt.toISOString(),
      durationMs: performance.now() - started,
      routes,
      phases,
      instances: options.instances.map((control): InstanceReport => {
        const t = tracked.get(control.spec.id);
        const base = { id: control.spec.id, host: control.spec.host, address: control.spec.address, port: control.spec.port };
        if (!t) return { ...base, from: undefined, version: undefined, inPool: serving.has(control.spec.id), outcome: "not-reached", steps: [] };
        return {
          ...base,
          from: t.from,
          version: t.version,
          inPool: serving.has(control.spec.id),
          outcome: t.outcome,
          steps: t.steps,
          ...(t.error === undefined ? {} : { error: t.error }),
        };
      }),
      ...(error ? { error: { code: error.code, message: error.message, ...(error.instance ? { instance: error.instance } : {}), ...(step ? { step } : {}) } } : {}),
      ...(recovery ? { recovery } : {}),
      ...(verify ? { verify } : {}),
    };
    if (plannedAndRecorded) {
      journalRequired = false;
      await record({ type: "end", id: deployId, ok: result.ok, ...(result.error ? { error: result.error.message.split("\n")[0]! } : {}), instances: result.instances.map((i) => ({ id: i.id, version: i.version, inPool: i.inPool, outcome: i.outcome })) });
    }
    emit({ type: "done", report: result });
    return result;
  };
  let plannedAndRecorded = false;

  // Preflight: nothing has been touched if this throws.
  let plan: DeployPlan;
  try {
    ({ plan, observed } = await planDeploy(options));
  } catch (error) {
    // Nothing was touched: report pool membership as the proxy has it.
    const routing = await options.proxy.current({ signal }).catch(() => undefined);
    serving = routing ? servingInstances(routing) : new Set(options.instances.map((i) => i.spec.id));
    return report(toNodropError(error, "E_PREFLIGHT"), "preflight");
  }
  emit({ type: "preflight", instances: observed });
  emit({ type: "plan", plan });
  serving = new Set(observed.filter((i) => i.inPool).map((i) => i.id));
  if (options.verify) {
    try {
      await options.verify.start({ version: options.version });
    } catch (error) {
      return report(toNodropError(error, "E_VERIFY"), "verify");
    }
    verifying = true;
  }
  try {
    await record({ type: "deploy", id: deployId, version: options.version, strategy: options.strategy.name, instances: observed.map((o) => ({ id: o.id, from: o.version })) });
  } catch (error) {
    return report(toNodropError(error, "E_JOURNAL"), "journal");
  }
  plannedAndRecorded = true;
  for (const o of observed) {
    const control = options.instances.find((i) => i.spec.id === o.id)!;
    tracked.set(o.id, { control, from: o.version, version: o.version, touched: false, outcome: o.version === options.version ? "unchanged" : "not-reached", steps: [] });
  }

  const timed = async (phase: string, kind: StepKind, id: string | undefined, fn: () => Promise<void>) => {
    emit({ type: "step", phase, kind, instance: id, status: "start" });
    const t0 = performance.now();
    try {
      await record({ type: "step", id: deployId, phase, kind, instance: id, status: "start" });
      await fn();
      const ms = performance.now() - t0;
      if (id) tracked.get(id)!.steps.push({ kind, ms, ok: true });
      // The journal first: what anyone sees has already been recorded.
      await record({ type: "step", id: deployId, phase, kind, instance: id, status: "ok" });
      emit({ type: "step", phase, kind, instance: id, status: "ok", ms });
    } catch (error) {
      const ms = performance.now() - t0;
      const e = toNodropError(error, "E_INSTANCE", id ? `${kind} of ${id}` : kind);
      if (id) {
        const t = tracked.get(id)!;
        t.steps.push({ kind, ms, ok: false });
        t.error = e.message;
      }
      emit({ type: "step", phase, kind, instance: id, status: "fail", ms, detail: e.message });
      await record({ type: "step", id: deployId, phase, kind, instance: id, status: "fail", detail: e.message.split("\n")[0]! }).catch(() => undefined);
      throw e;
    }
  };

  let routingInForce: Routing | undefined;
  /**
   * Whether a request can still reach the instance. A pin for the version being deployed counts
   * only for instances already running it: a client can hold that pin only after one served it.
   */
  const reachable = (id: string): boolean => {
    if (!routingInForce) return serving.has(id);
    const r = routingInForce;
    // Own keys only: a version or pool named `constructor` is a name like any other.
    const pinned = Object.hasOwn(r.pins, options.version) ? r.pins[options.version] : undefined;
    return routedRegardless(id) || (pinned !== undefined && inPool(r, pinned, id) && tracked.get(id)?.version === options.version);
  };
  /** Reached by the default pool, a default switch or the pin of another version. */
  const routedRegardless = (id: string): boolean => {
    if (!routingInForce) return serving.has(id);
    const r = routingInForce;
    const pools = [r.defaultPool, ...(r.switchDefault ? [r.switchDefault.to] : [])];
    for (const [version, pool] of Object.entries(r.pins)) if (version !== options.version) pools.push(pool);
    return pools.some((pool) => inPool(r, pool, id));
  };
  const inPool = (r: Routing, pool: string, id: string): boolean => Object.hasOwn(r.pools, pool) && (r.pools[pool]?.includes(id) ?? false);

  const applyRouting = async (routing: Routing, why: string, phase: string, routeSignal: AbortSignal | undefined) => {
    await timed(phase, "route", undefined, async () => {
      const instances = options.instances.map((i) => ({ ...i.spec, version: tracked.get(i.spec.id)?.version }));
      const result = await options.proxy
        .apply(routing, instances, { signal: routeSignal })
        .catch((error: unknown) => {
          // A proxy failure must stop the deploy as one, whatever the adapter threw.
          const e = toNodropError(error, "E_PROXY_RELOAD", `proxy ${options.proxy.name}`);
          // A drain that ran out of time still put the new routing in force.
          if (e.code === "E_PROXY_DRAIN") {
            serving = servingInstances(routing);
            routingInForce = routing;
          }
          throw e;
        });
      serving = servingInstances(routing);
      routingInForce = routing;
      routes.push({ why, generation: result.generation, confirmMs: result.confirmMs, drainMs: result.drainMs, cut: result.cut ?? 0 });
      emit({ type: "route", why, generation: result.generation, confirmMs: result.confirmMs, drainMs: result.drainMs, serving: [...serving] });
    });
  };

  const runStep = async (phase: PlanPhase, step: PlanStep) => {
    if (signal?.aborted) throw abortError(signal);
    // Checked between steps: a step in progress finishes, then the phase's failure rule applies.
    const breach = options.verify?.breach();
    if (breach) throw new NodropError("E_VERIFY", `${breach}; stopping the deploy (\`nodrop rollback\` returns every instance to the previous version)`);
    switch (step.kind) {
      case "route":
        return applyRouting(step.routing, step.why, phase.name, signal);
      case "soak":
        return timed(phase.name, "soak", undefined, () => sleep(step.ms, signal).catch(() => Promise.reject(abortError(signal))));
      default:
        return forEachPerHost(step.instances, (id) => tracked.get(id)!.control.spec.host, parallel, (id) => {
          const t = tracked.get(id)!;
          return timed(phase.name, step.kind, id, async () => {
            if ((step.kind === "stop" || step.kind === "update") && reachable(id)) {
              // The engine's own guard: a strategy must never stop an instance that can still get requests.
              throw new NodropError("E_PLAN", `plan would ${step.kind} ${id} while it is in the pool`, { instance: id });
            }
            t.touched = true;
            if (step.kind === "stop") await t.control.stop({ version: t.version, signal });
            else if (step.kind === "update") {
              await t.control.update({ version: options.version, previous: t.from, signal });
              t.version = options.version;
            } else if (step.kind === "start") await t.control.start({ version: options.version, signal });
            else {
              await waitHealthy(options.health, t.control.spec, options.version, { ...options.healthWait, signal });
              t.outcome = "updated";
            }
          });
        });
    }
  };

  let phaseIndex = 0;
  for (const phase of plan.phases) {
    emit({ type: "phase", phase: phase.name, index: phaseIndex++, total: plan.phases.length });
    let currentStep: PlanStep | undefined;
    const phaseStart = performance.now();
    const endPhase = (ok: boolean) => phases.push({ name: phase.name, startMs: phaseStart - started, ms: performance.now() - phaseStart, ok });
    try {
      for (const step of phase.steps) {
        currentStep = step;
        await runStep(phase, step);
      }
      endPhase(true);
    } catch (error) {
      const failure = NodropError.is(error) ? error : toNodropError(error, "E_INSTANCE");
      const stepName = `${phase.name}: ${currentStep?.kind ?? "?"}`;
      if (failure.code.startsWith("E_PROXY") && failure.code !== "E_PROXY_DRAIN") {
        endPhase(false);
        // The adapter left the previous config in force; another proxy change would likely fail too.
        return report(failure, stepName, "the proxy kept its previous config; no instance was changed after the failure");
      }
      const recovery = await recover(phase, failure);
      endPhase(false);
      return report(failure, stepName, recovery);
    }
  }
  return report();

  async function recover(phase: PlanPhase, failure: NodropError): Promise<string> {
    emit({ type: "recovery", reason: failure.message });
    journalRequired = false;
    // Recovery must finish even after an abort: it gets its own deadline instead of the deploy's signal.
    const recoverySignal = AbortSignal.timeout(options.recoveryTimeoutMs ?? 300_000);
    const touched = phase.instances.map((id) => tracked.get(id)!).filter((t) => t.touched);
    const lines: string[] = [];
    if (phase.onFailure === "revert") {
      await forEachPerHost(touched, (t) => t.control.spec.host, parallel, async (t) => {
        const id = t.control.spec.id;
        const previous = t.from;
        if (previous === undefined) {
          t.outcome = "failed";
          return;
        }
        if (routedRegardless(id) || (t.outcome === "updated" && reachable(id))) {
          // Requests can reach it (serving as it is, or checked healthy on the new version):
          // reverting it would mean draining it first. It stays as it is.
          return;
        }
        try {
          await timed(`${phase.name} (revert)`, "stop", id, () => t.control.stop({ version: t.version, signal: recoverySignal }));
          await timed(`${phase.name} (revert)`, "update", id, () => t.control.update({ version: previous, previous: options.version, signal: recoverySignal }));
          t.version = previous;
          await timed(`${phase.name} (revert)`, "start", id, () => t.control.start({ version: previous, signal: recoverySignal }));
          await timed(`${phase.name} (revert)`, "check", id, () => waitHealthy(options.health, t.control.spec, previous, { ...options.healthWait, signal: recoverySignal }).then(() => undefined));
          t.outcome = "reverted";
        } catch {
          t.outcome = "failed";
        }
      });
      const reverted = touched.filter((t) => t.outcome === "reverted").map((t) => t.control.spec.id);
      const failed = touched.filter((t) => t.outcome === "failed").map((t) => t.control.spec.id);
      if (reverted.length) lines.push(`reverted ${reverted.join(", ")} to their previous version`);
      if (failed.length) lines.push(`could not revert ${failed.join(", ")}: left out of the pool`);
    } else {
      for (const t of touched) if (t.outcome !== "updated") t.outcome = "failed";
      lines.push(`left ${touched.filter((t) => t.outcome === "failed").map((t) => t.control.spec.id).join(", ")} out of the pool; the routing in force is kept`);
    }

    if (phase.onFailure === "revert") {
      // Instances nodrop checked healthy: updated or reverted ones, and untouched ones that were healthy to begin with.
      const healthyWithVersions = observed
        .filter((o) => {
          const outcome = tracked.get(o.id)!.outcome;
          const t = tracked.get(o.id)!;
          return outcome === "updated" || outcome === "reverted" || (!t.touched && (outcome === "not-reached" || outcome === "unchanged") && o.healthy);
        })
        .map((o) => ({ ...o, version: tracked.get(o.id)!.version }));
      if (healthyWithVersions.length > 0) {
        const routing = options.strategy.recoveryRouting?.(healthyWithVersions) ?? singlePool(healthyWithVersions.map((o) => o.id));
        try {
          validateRouting(routing, new Set(observed.map((o) => o.id)));
          await applyRouting(routing, "recovery: healthy instances back in the pool", `${phase.name} (revert)`, recoverySignal);
          lines.push(`pool restored: ${[...serving].join(", ")}`);
        } catch (error) {
          lines.push(`could not restore the pool (${toNodropError(error, "E_PROXY_RELOAD").message}); the previous proxy config is in force`);
        }
      } else {
        lines.push("no healthy instance to route to; the proxy config in force was kept");
      }
    }
    return lines.join("; ");
  }
}

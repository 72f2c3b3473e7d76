import type { DeployRun } from "./deploy-run.js";
import { NodropError, toNodropError } from "./errors.js";
import type { RunListener } from "./run-listener.js";
import type { DeployPlan, DeployVerifier } from "./types.js";

/**
 * Runs the verify probe for the deploy: starts it after the plan (a site that does not answer
 * stops the deploy with nothing changed), stops the deploy at the next step of the plan once a
 * threshold is crossed, and puts its counts in the run for the report.
 */
export class VerifyListener implements RunListener {
  readonly name = "verify";
  private running = false;

  private readonly verifier: DeployVerifier;

  constructor(verifier: DeployVerifier) {
    this.verifier = verifier;
  }

  async started(run: DeployRun, _plan: DeployPlan): Promise<void> {
    await this.verifier.start({ version: run.version }).catch((error: unknown) => Promise.reject(toNodropError(error, "E_VERIFY")));
    this.running = true;
  }

  beforeStep(): void {
    // Checked between steps: a step in progress finishes, then the phase's failure rule applies.
    const breach = this.verifier.breach();
    if (breach) throw new NodropError("E_VERIFY", `${breach}; stopping the deploy (\`nodrop rollback\` returns every instance to the previous version)`);
  }

  async stopping(run: DeployRun): Promise<void> {
    if (!this.running) return;
    this.running = false;
    run.verify = await this.verifier.stop();
  }
}

import * as core from "@actions/core";

// Runs after the job's steps, also when the deploy step was cancelled. Keys were only ever held in
// memory (never written to disk), so there is nothing to delete; what is left to do is to say so
// when a deploy did not reach its end. The main step saves "deploying" only once the engine began
// its first change, so a refused lock or a failed preflight (nothing touched) leaves it empty.
const unfinished = core.getState("deploying");
if (unfinished) {
  core.warning(
    `the deploy of ${unfinished} did not finish (cancelled or killed): instances may be on different versions or out of the pool. Run \`nodrop status --config ...\` to see, and deploy again to finish.`,
    { title: "nodrop: deploy left incomplete" },
  );
} else core.info("nodrop: nothing to clean up (SSH keys were never written to disk)");

import { run } from "./main.js";

// The runner sends SIGINT, then SIGTERM 7.5 s later: the first one aborts the deploy, which then
// finishes or undoes the current proxy change; later ones must not kill it halfway.
const controller = new AbortController();
for (const name of ["SIGINT", "SIGTERM"] as const) {
  process.on(name, () => {
    if (!controller.signal.aborted) controller.abort(new Error(`the runner sent ${name}`));
  });
}
await run(controller.signal);

#!/usr/bin/env node
import { main } from "./main.js";

// First SIGINT/SIGTERM aborts the deploy; the engine then finishes or undoes the current proxy
// change and restores a healthy pool before exiting. Later signals only say so.
const controller = new AbortController();
let signals = 0;
const onSignal = (name: string) => {
  signals += 1;
  if (signals === 1) controller.abort(new Error(`received ${name}`));
  else process.stderr.write(`nodrop: ${name} again; still restoring a healthy pool, nginx stays valid\n`);
};
process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));

const io = {
  stdout: { write: (t: string) => void process.stdout.write(t), isTTY: Boolean(process.stdout.isTTY) },
  stderr: { write: (t: string) => void process.stderr.write(t), isTTY: Boolean(process.stderr.isTTY) },
  signal: controller.signal,
};
process.exitCode = await main(process.argv.slice(2), io);

import { describe, expect, it } from "vitest";
import { NodropError } from "./errors.js";
import type { ExecResult, Executor } from "./executor.js";
import { SlotInspector } from "./slot-inspector.js";

/** An executor that records each command and answers with `answer` (the batching is what is tested, not the shell). */
function recording(answer: (command: string) => ExecResult): Executor & { commands: string[] } {
  const commands: string[] = [];
  return { name: "fake", host: "web1", commands, exec: async (command) => (commands.push(command), answer(command)) };
}

describe("SlotInspector", () => {
  it("the inspections asked for in one turn run as one command per address, each answered with its own slot", async () => {
    const executor = recording(() => ({ code: 0, stdout: "slot 9011\nrss 10\nslot 9012\nlisten 127.0.0.1:9012 x\nslot 9013\nmem 50\n", stderr: "", durationMs: 1 }));
    const inspector = new SlotInspector(executor);
    const [a, b, c] = await Promise.all([
      inspector.inspect("a", "127.0.0.1", { idlePort: 9011, livePort: 8011 }, undefined),
      inspector.inspect("b", "127.0.0.1", { idlePort: 9012, livePort: 8012 }, undefined),
      inspector.inspect("c", "127.0.0.2", { idlePort: 9013, livePort: 8013 }, undefined),
    ]);
    expect(executor.commands).toHaveLength(2);
    expect(executor.commands[0]).toContain('pairs="9011 8011 9012 8012"');
    expect(executor.commands[1]).toContain('"9013 8013"');
    expect(a).toEqual({ free: true, liveRssBytes: 10 * 1024, availableBytes: 50 * 1024 });
    expect(b).toMatchObject({ free: false });
    expect(c).toEqual({ free: true, availableBytes: 50 * 1024 });
    // A later turn runs its own command.
    await inspector.inspect("a", "127.0.0.1", { idlePort: 9011, livePort: 8011 }, undefined);
    expect(executor.commands).toHaveLength(3);
  });

  it("a command that fails rejects every request of its batch with an error naming that request's instance and port", async () => {
    const inspector = new SlotInspector(recording(() => ({ code: 2, stdout: "", stderr: "ss: permission denied", durationMs: 1 })));
    const results = await Promise.allSettled([
      inspector.inspect("a", "127.0.0.1", { idlePort: 9011, livePort: 8011 }, undefined),
      inspector.inspect("b", "127.0.0.1", { idlePort: 9012, livePort: 8012 }, undefined),
    ]);
    const errors = results.map((r) => (r.status === "rejected" ? (r.reason as NodropError) : undefined));
    expect(errors.map((e) => e?.instance)).toEqual(["a", "b"]);
    expect(errors[1]?.message).toBe("cannot inspect port 9012 on web1 for b: ss: permission denied");
  });

  it("an answer without a request's slot rejects that request only", async () => {
    const inspector = new SlotInspector(recording(() => ({ code: 0, stdout: "slot 9011\nmem 1\n", stderr: "", durationMs: 1 })));
    const [a, b] = await Promise.allSettled([
      inspector.inspect("a", "127.0.0.1", { idlePort: 9011, livePort: 8011 }, undefined),
      inspector.inspect("b", "127.0.0.1", { idlePort: 9012, livePort: 8012 }, undefined),
    ]);
    expect(a.status).toBe("fulfilled");
    expect(b.status === "rejected" && NodropError.is(b.reason) && b.reason.instance).toBe("b");
  });
});

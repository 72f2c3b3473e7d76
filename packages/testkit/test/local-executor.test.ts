// executorSuite over core's localExecutor: commands with bash on this machine.
import { localExecutor } from "@nodrop/core";
import { afterAll, beforeAll, describe, it } from "vitest";
import { executorSuite } from "../src/index.js";

executorSuite({ describe, it, beforeAll, afterAll }, { name: "localExecutor", create: async () => localExecutor() });

/**
 * Every day-2 drill (test/engine/drills/), through the real engine over the simulated cloud: each
 * stack deployed once, copied per drill, one change, judged from the cloud's journal (README
 * "Day-2 drills"). Two drills run at a time: each engine operation is its own process.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { builtEngine } from "./engine/harness";
import { DrillRunner, type DrillResult } from "./engine/drills/framework";
import { DRILLS } from "./engine/drills";

const engine = builtEngine();
// In CI the build step of .ci/run builds the engine: a missing engine there is a failure, not a skip.
if (!engine && process.env.CI) throw new Error("the Pulumi engine is not built: .ci/run runs test/engine/build-engine.sh before npm test");
const skip = engine ? false : "the Pulumi engine is not built here: run `npm run engine:build` (test/engine/build-engine.sh, minutes once)";

describe("day-2 drills through the real engine", { skip }, () => {
  let runner: DrillRunner;
  const results = new Map<string, Promise<DrillResult>>();
  before(() => {
    runner = new DrillRunner();
    // All drills start at once, two at a time; each `it` awaits its own.
    const all = runner.runAll(DRILLS, 2);
    DRILLS.forEach((d, i) => results.set(d.name, all.then((r) => r[i]!)));
  });
  after(() => runner.close());

  for (const d of DRILLS) {
    // A defect the drill found that is not fixed yet is reported as todo, with the defect named.
    it(`${d.name}: ${d.summary}`, { timeout: 90 * 60_000, todo: d.knownDefect }, async () => {
      const r = await results.get(d.name)!;
      assert.ok(r.ok, r.message);
    });
  }
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { runScenario } from "./support/mockScenario";

// The offline plan refuses what the engine refuses: one URN registered twice (pulumi/pulumi
// pkg/resource/deploy/step_generator.go generateURN, sdk/go/common/diag/errors.go
// GetDuplicateResourceURNError), in the engine's words. URNs are formed as the engine forms them.

test("a second resource with the same type, parent type and name is refused with the engine's message", () => {
  const run = runScenario("same-urn-twice");
  assert.equal(run.error, "Duplicate resource URN 'urn:pulumi:unit::hardened-matrix::random:index/randomId:RandomId::twice'; try giving it a unique name");
  assert.equal(run.resources.filter((r) => r.name === "twice").length, 1, "the first registration stands");
});

test("the same name under parents of different type chains is two URNs for the engine, and accepted", () => {
  const run = runScenario("same-name-other-type-chain");
  assert.equal(run.error, undefined, run.error);
  const same = run.resources.filter((r) => r.name === "same");
  assert.equal(new Set(same.map((r) => r.parent)).size, 2, `both recorded, each under its own parent: ${JSON.stringify(same)}`);
});

test("Headscale: a cluster node named admin collides with the deployer's key, and the plan refuses it as the engine would", () => {
  const run = runScenario("headscale-node-named-admin");
  assert.equal(
    run.error,
    "Duplicate resource URN 'urn:pulumi:unit::hardened-matrix::hardened-matrix:vpn:HeadscaleServer$pulumi-nodejs:dynamic/headscale:PreAuthKey::hs-admin-key'; try giving it a unique name",
  );
});

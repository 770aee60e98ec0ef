import assert from "node:assert/strict";
import { test } from "node:test";
import { planInChild, type ChildPlan } from "./support/planChild";

// README "Upgrades": moving an image pin changes one field of one service, nothing else: the
// preview shows an update in place, and no stateful resource is touched.

function leaves(value: unknown, prefix = "", out = new Map<string, string>()): Map<string, string> {
  if (value !== null && typeof value === "object" && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(value));
  return out;
}

/** Every changed leaf, as `<resource name>: <path>`. */
function changes(a: ChildPlan, b: ChildPlan): string[] {
  assert.deepEqual(b.resources.map((r) => `${r.type}::${r.name}`), a.resources.map((r) => `${r.type}::${r.name}`), "the same resources");
  const out: string[] = [];
  a.resources.forEach((r, i) => {
    const before = leaves(r.inputs);
    const after = leaves(b.resources[i]!.inputs);
    for (const k of new Set([...before.keys(), ...after.keys()])) if (before.get(k) !== after.get(k)) out.push(`${r.name}: ${k}`);
  });
  return out.sort();
}

const base = planInChild("prod", {});

test("a new Dendrite pin changes the image of the Dendrite service and nothing else", () => {
  const moved = planInChild("prod", { "hardened-matrix:images": { dendrite: "matrixdotorg/dendrite-monolith:v0.15.3" } });
  assert.deepEqual(changes(base, moved), ["dendrite-service: taskSpec.containerSpec.image"]);
});

test("a new PostgreSQL minor changes the image of the services that run it (the server and the backup's dump)", () => {
  const moved = planInChild("prod", { "hardened-matrix:images": { postgres: "postgres:17.10-alpine" } });
  const changed = changes(base, moved);
  assert.ok(changed.length > 0);
  for (const c of changed) assert.match(c, /-service: taskSpec\.containerSpec\.image$/, c);
  assert.ok(changed.includes("postgres-service: taskSpec.containerSpec.image"));
});

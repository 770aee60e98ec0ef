import assert from "node:assert/strict";
import type { Plan, PlannedResource } from "../../plan/plan";

// Reading a plan the way a reviewer would: shared by every test of the program.
export type Inputs = Record<string, any>;

type HasResources = { resources: PlannedResource[] };

export function ofType(plan: HasResources, type: string): PlannedResource[] {
  return plan.resources.filter((r) => r.type === type);
}

export function named(plan: HasResources, name: string): PlannedResource {
  const r = plan.resources.find((x) => x.name === name);
  assert.ok(r, `no resource named ${name}`);
  return r;
}

/** Raw inputs (secrets in place) of a resource. */
export function raw(plan: Plan, r: PlannedResource): Inputs {
  return plan.rawInputs.get(r.urn) as Inputs;
}

/** The content of a planned file, `<resource name>/<file name>`. */
export function plannedFile(plan: Plan, path: string): string {
  const f = plan.files.find((x) => x.path === path);
  assert.ok(f, `no planned file ${path}; have ${plan.files.map((x) => x.path).join(", ")}`);
  return f.content;
}

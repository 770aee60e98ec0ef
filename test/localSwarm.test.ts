import assert from "node:assert/strict";
import { before, test } from "node:test";
import { FIXED_SWARM_NAMES } from "../components/platform/local";
import { planStack, reveal, type Plan } from "../plan/plan";

// The local target's guard knows every name the program gives a Swarm object: the local plan with
// every optional service on (backup, federation gate) names nothing the guard does not check.

let plan: Plan;
before(async () => {
  plan = await planStack("local", {
    "hardened-matrix:backupRepository": "/srv/hm-backups",
    "hardened-matrix:federationMode": "allowlist",
    "hardened-matrix:federationAllowlist": ["matrix.org"],
  });
  assert.equal(plan.error, undefined, String(plan.error));
});

type Inputs = Record<string, any>;
const inputs = (r: { inputs: unknown }) => reveal(r.inputs) as Inputs;

test("every service, network and volume name the local plan uses is one the guard checks", () => {
  const named = (type: string) => plan.resources.filter((r) => r.type === type).map((r) => String(inputs(r).name));
  const services = named("docker:index/service:Service");
  const networks = named("docker:index/network:Network");
  // Volumes: the volume resources, and the named volumes services mount (the engine creates those itself).
  const volumes = [
    ...named("docker:index/volume:Volume"),
    ...plan.resources
      .filter((r) => r.type === "docker:index/service:Service")
      .flatMap((r) => (inputs(r).taskSpec.containerSpec.mounts ?? []) as Inputs[])
      .filter((m) => m.type === "volume")
      .map((m) => String(m.source)),
  ];
  assert.ok(services.includes("backup") && services.includes("federation-gate"), services.join(", "));
  for (const [kind, names] of [["service", services], ["network", networks], ["volume", volumes]] as const) {
    for (const n of names) assert.ok((FIXED_SWARM_NAMES[kind] as readonly string[]).includes(n), `${kind} ${n} is not in FIXED_SWARM_NAMES.${kind}`);
  }
});

test("the init command guards a first deploy (create) and only checks the owner on later ones (update), for this stack", () => {
  const init = plan.resources.find((r) => r.type === "command:local:Command" && r.name === "local-init")!;
  const { create, update } = inputs(init);
  assert.match(create, /^stack=local$/m);
  assert.match(update, /^stack=local$/m);
  assert.match(create, /this engine already has/);
  assert.doesNotMatch(update, /this engine already has/);
  for (const script of [create, update]) assert.match(script, /this swarm already carries hardened-matrix stack/);
  assert.deepEqual(init.options.replaceOnChanges, [], "a change runs update, never a fresh create");
});

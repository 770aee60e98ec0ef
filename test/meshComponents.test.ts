import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { WireGuardMesh } from "../components/platform/mesh";
import { SwarmCluster } from "../components/platform/swarm";
import { runUnderMocks, type ProgramRun } from "../plan/mockRuntime";

// WireGuardMesh and SwarmCluster on their own, under mocks: which outputs are secret.
type Secrecy = { config: boolean; publicKey: boolean; managerId: boolean };
let run: ProgramRun;
let secrecy: Secrecy;

const isSecret = (o: pulumi.Output<unknown>): Promise<boolean> => (o as unknown as { isSecret: Promise<boolean> }).isSecret;

before(async () => {
  run = await runUnderMocks("unit", { values: {}, secretKeys: [] }, async () => {
    const ready = new command.local.Command("ready", { create: "true" });
    const nodes = [
      { name: "a", roles: ["manager" as const], meshAddress: "10.77.0.1", endpoint: "10.1.0.1", adminAddress: "100.64.0.1", machineId: 1 },
      { name: "b", roles: [], meshAddress: "10.77.0.2", endpoint: "10.1.0.2", adminAddress: "100.64.0.2", machineId: 2 },
    ];
    const mesh = new WireGuardMesh("m", { listenPort: 51820, pskVersion: 1, nodes: nodes.map((n) => ({ ...n, keyVersion: 1, ready })) });
    const swarm = new SwarmCluster("s", { addressPool: "10.20.0.0/16", nodes: nodes.map((n) => ({ ...n, meshReady: mesh.applied[n.name]! })) });
    secrecy = {
      config: await isSecret(mesh.configs.a!),
      publicKey: await isSecret(mesh.publicKeys.a!),
      managerId: await isSecret(swarm.managerNodeId),
    };
  });
  assert.equal(run.error, undefined, String(run.error));
});

test("wg0 files are secret outputs; public keys and node ids are not", () => {
  assert.deepEqual(secrecy, { config: true, publicKey: false, managerId: false });
});

test("a worker joins after the init, over its own wg0; the provider waits for the labels", () => {
  const byName = new Map(run.resources.map((r) => [r.name, r]));
  const join = byName.get("s-b-join")!;
  assert.ok(join.options.dependsOn.includes(byName.get("s-a-init")!.urn));
  assert.ok(join.options.dependsOn.includes(byName.get("m-b-wg0")!.urn));
  assert.ok(byName.get("m-a-wg0")!.options.dependsOn.includes(byName.get("ready")!.urn));
  assert.ok(byName.get("s-docker")!.options.dependsOn.includes(byName.get("s-labels")!.urn));
  assert.equal(byName.get("s-docker")!.type, "pulumi:providers:docker");
});

test("a join reads its token from the first manager as it runs; it re-runs for a new machine, script or swarm", () => {
  const byName = new Map(run.resources.map((r) => [r.name, r]));
  const join = byName.get("s-b-join")!;
  const inputs = join.inputs as { create: string; stdin: unknown; triggers: unknown[] };
  assert.match(inputs.create, /^hm_secret=\$\(ssh .* -n root@100\.64\.0\.1 docker swarm join-token -q worker\) \|\| /m);
  assert.match(inputs.create, /\| ssh .* root@100\.64\.0\.2 timeout 300 sh -s$/);
  assert.equal(typeof inputs.stdin, "string", "the join script holds no secret: a preview shows its changes");
  assert.doesNotMatch(String(inputs.stdin), /SWMTKN-\d-[0-9a-z]{10,}|mock-?[0-9a-f]{20}/, "no token-shaped value in the script");
  // script hash, machine id, the first manager's node id (as the init printed it)
  assert.equal(inputs.triggers.length, 3);
  assert.equal(inputs.triggers[1], 2);
  assert.match(String(inputs.triggers[2]), /^mock[0-9a-f]{25}$/);
  assert.deepEqual(join.options.additionalSecretOutputs, ["stdout", "stderr"]);
});

import assert from "node:assert/strict";




import { before, test } from "node:test";
import { planStack, type Plan } from "../plan/plan";
import { meshArtifacts, withJoinToken, type MeshNodeArtifacts } from "./support/meshPlan";

// The prod stack's private network under mocks: the WireGuard mesh, the swarm scripts, the provider.
let plan: Plan;
let mesh: MeshNodeArtifacts[];
before(async () => {
  plan = await planStack("prod");
  assert.equal(plan.error, undefined, String(plan.error));
  mesh = meshArtifacts(plan);
});

const NODES = ["hm-prod-1", "hm-prod-2", "hm-prod-3"];

test("meshArtifacts: every node with its addresses, wg0.conf and scripts, first manager first", () => {
  assert.deepEqual(mesh.map((n) => n.name), NODES);
  const [first, ...others] = mesh;
  assert.ok(first!.scripts.init && first!.scripts.label && !first!.scripts.join);
  for (const n of others) assert.ok(n.scripts.join && !n.scripts.init && n.joinToken, n.name);
  for (const n of mesh) {
    assert.match(n.meshAddress, /^10\.77\.\d+\.\d+$/);
    assert.match(n.vpcAddress, /^\d+\.\d+\.\d+\.\d+$/);
    assert.match(n.wgConf, new RegExp(`^Address = ${n.meshAddress.replace(/\./g, "\\.")}/32$`, "m"));
    assert.ok(n.scripts.wgApply.includes(n.wgConf));
  }
  const join = mesh[1]!.scripts.join!;
  assert.ok(!withJoinToken(join, "SWMTKN-1-other").includes(mesh[1]!.joinToken!));
});

test("wg0.conf: every other node is a peer at its VPC address on 51820, /32 only, MTU 1420", () => {
  for (const n of mesh) {
    assert.match(n.wgConf, /^MTU = 1420$/m);
    assert.match(n.wgConf, /^ListenPort = 51820$/m);
    assert.doesNotMatch(n.wgConf, /^(DNS|Table|SaveConfig|PostUp|PreUp|PostDown|PreDown) =/m, "wg-quick must touch nothing but wg0");
    const peers = n.wgConf.split("[Peer]").slice(1);
    assert.equal(peers.length, mesh.length - 1);
    for (const other of mesh.filter((o) => o.name !== n.name)) {
      const p = peers.find((x) => x.includes(`PublicKey = ${other.publicKey}\n`));
      assert.ok(p, `${n.name} lacks peer ${other.name}`);
      assert.match(p, new RegExp(`AllowedIPs = ${other.meshAddress}/32\n`));
      assert.match(p, new RegExp(`Endpoint = ${other.vpcAddress}:51820\n`));
    }
  }
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { meshArtifacts } from "./support/meshPlan";
import { planInChild, type ChildPlan } from "./support/planChild";

// Plans of the prod stack with other node lists, each in its own process (mocks are per process).
const ROOT = path.resolve(__dirname, "..");
type Node = { name: string; size: string; roles: string[]; meshKeyVersion?: number };
const PROD_NODES = (parse(readFileSync(path.join(ROOT, "Pulumi.prod.yaml"), "utf8")).config["hardened-matrix:nodes"] as Node[]);

/** prod's three managers plus plain workers up to `count` nodes. */
function nodes(count: number): Node[] {
  const workers = Array.from({ length: count - PROD_NODES.length }, (_, i) => ({ name: `hm-prod-w${i + 1}`, size: "s-1vcpu-1gb", roles: [] }));
  return [...PROD_NODES, ...workers];
}

function plan(overrides: Record<string, unknown>): ChildPlan {
  const p = planInChild("prod", overrides);
  assert.equal(p.error, undefined, p.error);
  return p;
}

const byName = (p: ChildPlan) => Object.fromEntries(meshArtifacts(p).map((n) => [n.name, n]));
const count = (p: ChildPlan) => p.resources.length;

test("adding a node changes no existing node's keys, address or PSKs; it adds a constant number of resources", () => {
  const before = plan({});
  // Listed first, so an allocation by position would renumber every other node.
  const after = plan({ "hardened-matrix:nodes": [nodes(4)[3], ...PROD_NODES] });
  const [a, b] = [byName(before), byName(after)];
  for (const name of Object.keys(a)) {
    assert.equal(b[name]!.meshAddress, a[name]!.meshAddress, name);
    assert.equal(b[name]!.publicKey, a[name]!.publicKey, name);
    // The existing file gains exactly the new peer; every existing line stays.
    for (const line of a[name]!.wgConf.split("\n")) assert.ok(b[name]!.wgConf.includes(line), `${name} lost: ${line}`);
    assert.equal(b[name]!.wgConf.split("[Peer]").length, a[name]!.wgConf.split("[Peer]").length + 1);
  }
  const w = b["hm-prod-w1"]!;
  assert.ok(w.scripts.join && w.tokenFetch);
  // A worker joins with the worker token, managers with the manager token.
  assert.deepEqual(w.tokenFetch, ["docker", "swarm", "join-token", "-q", "worker"]);
  assert.deepEqual(b["hm-prod-2"]!.tokenFetch, ["docker", "swarm", "join-token", "-q", "manager"]);
  assert.deepEqual(b["hm-prod-3"]!.tokenFetch, b["hm-prod-2"]!.tokenFetch);
  // One mesh key, one wg0 step, one join, one teardown, one droplet, one bootstrap wait, its
  // generation and its own join key: resources per node are constant.
  const added = after.resources.filter((r) => !before.resources.some((x) => x.type === r.type && x.name === r.name));
  assert.deepEqual(added.map((r) => r.type).sort(), [
    "command:local:Command",
    "command:local:Command",
    "command:local:Command",
    "command:local:Command",
    "digitalocean:index/droplet:Droplet",
    "random:index/randomBytes:RandomBytes",
    "random:index/randomId:RandomId",
    "tailscale:index/tailnetKey:TailnetKey",
  ]);
});

test("rotation: meshPskVersion is the master secret's keeper; a node's meshKeyVersion is its key's keeper", () => {
  const rotated = plan({
    "hardened-matrix:meshPskVersion": 2,
    "hardened-matrix:nodes": PROD_NODES.map((n) => (n.name === "hm-prod-2" ? { ...n, meshKeyVersion: 3 } : n)),
  });
  const keepers = (name: string) => {
    const r = rotated.resources.find((x) => x.name === name && x.type === "random:index/randomBytes:RandomBytes");
    assert.ok(r, `no RandomBytes ${name}`);
    return (r.inputs as { keepers?: Record<string, string> }).keepers;
  };
  assert.deepEqual(keepers("cloud-mesh-psk-master"), { version: "2" });
  assert.deepEqual(keepers("cloud-mesh-hm-prod-2-key"), { version: "3" });
  assert.deepEqual(keepers("cloud-mesh-hm-prod-1-key"), { version: "1" });
});

test("scale: resources grow linearly with the mesh; plan wall time for 3, 10 and 50 nodes", () => {
  const sizes = [3, 10, 50];
  const plans = sizes.map((n) => plan({ "hardened-matrix:nodes": nodes(n), "hardened-matrix:meshCidr": "10.77.0.0/16" }));
  const counts = plans.map(count);
  const perNode = (counts[1]! - counts[0]!) / (sizes[1]! - sizes[0]!);
  assert.equal(perNode, (counts[2]! - counts[1]!) / (sizes[2]! - sizes[1]!), `not linear: ${counts.join(", ")}`);
  // The six of a node's mesh and swarm, its teardown and its generation (the join key is per node too).
  assert.ok(Number.isInteger(perNode) && perNode <= 8, `${perNode} resources per node`);
  for (const [i, p] of plans.entries()) {
    assert.equal(meshArtifacts(p).length, sizes[i]);
    console.log(`mesh nodes=${sizes[i]} resources=${counts[i]} files=${p.files.length} planMs=${Math.round(p.ms)}`);
  }
});

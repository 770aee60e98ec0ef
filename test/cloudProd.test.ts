import assert from "node:assert/strict";
import { before, test } from "node:test";
import { mockTailnetDevice } from "../plan/mockRuntime";
import { planStack, type Plan } from "../plan/plan";
import { ATTACHMENT, DROPLET, dropletNames, firewallsOf, named, ofType, RECORD, runcmd, userData, VOLUME, type Inputs } from "./support/cloud";

// The real program, prod stack (three managers, roles spread), under mocks.
let plan: Plan;
before(async () => {
  plan = await planStack("prod");
  assert.equal(plan.error, undefined, String(plan.error));
});

const NODES = ["hm-prod-1", "hm-prod-2", "hm-prod-3"];

test("prod: three droplets in one VPC, sized per settings, tagged with their roles", () => {
  const vpc = ofType(plan, "digitalocean:index/vpc:Vpc");
  assert.equal(vpc.length, 1);
  assert.equal((vpc[0]!.inputs as Inputs).ipRange, "10.111.0.0/24");
  const droplets = ofType(plan, DROPLET);
  assert.deepEqual(droplets.map((d) => d.name), NODES);
  const by = Object.fromEntries(droplets.map((d) => [d.name, d.inputs as Inputs]));
  assert.equal(by["hm-prod-2"]!.size, "s-2vcpu-4gb");
  assert.deepEqual(by["hm-prod-1"]!.tags, ["hardened-matrix-prod", "hardened-matrix-prod-manager", "hardened-matrix-prod-edge"]);
  assert.deepEqual(by["hm-prod-3"]!.tags, ["hardened-matrix-prod", "hardened-matrix-prod-manager", "hardened-matrix-prod-turn"]);
  for (const d of droplets) {
    assert.deepEqual(d.options.ignoreChanges, ["userData", "sshKeys", "image", "monitoring"], d.name);
    assert.equal(d.options.deleteBeforeReplace, true, d.name);
    assert.equal((d.inputs as Inputs).vpcUuid, vpc[0]!.id);
  }
});

test("prod: postgres and dendrite volumes on the db node, ACME on the edge node", () => {
  const ids = dropletNames(plan);
  const placement = Object.fromEntries(
    ofType(plan, VOLUME).map((v) => {
      const a = ofType(plan, ATTACHMENT).find((x) => (x.inputs as Inputs).volumeId === v.id);
      assert.ok(a, `${v.name} not attached`);
      assert.ok(v.options.protect && v.options.retainOnDelete, `${v.name} protected and retained`);
      return [v.name, ids.get((a.inputs as Inputs).dropletId)];
    }),
  );
  for (const a of ofType(plan, ATTACHMENT)) assert.equal(a.options.deleteBeforeReplace, true, `${a.name}: a volume attaches to one droplet at a time`);
  assert.deepEqual(placement, { "hm-prod-postgres": "hm-prod-2", "hm-prod-dendrite": "hm-prod-2", "hm-prod-acme": "hm-prod-1" });
  // Each node's cloud-init mounts exactly the volumes attached to it.
  const mounted = (node: string) => [...runcmd(userData(plan, node).doc).matchAll(/scsi-0DO_Volume_(\S+) /g)].map((m) => m[1]).sort();
  assert.deepEqual(mounted("hm-prod-1"), ["hm-prod-acme"]);
  assert.deepEqual(mounted("hm-prod-2"), ["hm-prod-dendrite", "hm-prod-postgres"]);
  assert.deepEqual(mounted("hm-prod-3"), []);
});

test("prod: the reserved IP sits on the edge node; TURN's name points at the TURN node's own address", () => {
  const ids = dropletNames(plan);
  const assignments = ofType(plan, "digitalocean:index/reservedIpAssignment:ReservedIpAssignment");
  assert.equal(assignments.length, 1);
  assert.equal(assignments[0]!.options.deleteBeforeReplace, true, "the old assignment must go before the new one, or it unassigns the IP");
  assert.equal(ids.get((assignments[0]!.inputs as Inputs).dropletId), "hm-prod-1");
  const records = ofType(plan, RECORD).map((r) => r.inputs as Inputs);
  const a = (name: string) => records.find((r) => r.type === "A" && r.name === name)?.content;
  assert.equal(a("matrix.example.org"), plan.outputs.edgeIpv4);
  const nodes = plan.outputs.nodes as Inputs;
  assert.equal(a("turn.example.org"), nodes["hm-prod-3"].publicIpv4);
  assert.notEqual(a("turn.example.org"), plan.outputs.edgeIpv4);
  assert.equal(a("example.org"), undefined, "SRV delegation: the base domain is left alone");
});

test("prod: SRV delegation of the server name to the Matrix host's federation port; nothing proxied", () => {
  const records = ofType(plan, RECORD).map((r) => r.inputs as Inputs);
  const srv = records.filter((r) => r.type === "SRV");
  assert.deepEqual(
    srv.map((r) => [r.name, r.data]),
    [
      ["_matrix-fed._tcp.example.org", { priority: 10, weight: 5, port: 8448, target: "matrix.example.org" }],
      ["_matrix._tcp.example.org", { priority: 10, weight: 5, port: 8448, target: "matrix.example.org" }],
    ],
  );
  for (const r of records.filter((x) => x.type === "A")) assert.equal(r.proxied, false);
  assert.deepEqual(records.filter((r) => r.type === "CAA" && r.data.tag === "issue").map((r) => r.data.value), ["letsencrypt.org"]);
});

test("prod: each node gets only its role's firewall; none opens a forbidden port; all have outbound rules", () => {
  // No forbidden port: the policy pack (test/policy.test.ts).
  const openPorts = (node: string) =>
    firewallsOf(plan, node)
      .flatMap((f) => ((f.inputs as Inputs).inboundRules as Inputs[]).map((r) => `${r.portRange ?? "-"}/${r.protocol}`))
      .sort();
  assert.deepEqual(openPorts("hm-prod-1"), ["-/icmp", "443/tcp", "51820/udp", "80/tcp", "8448/tcp"]);
  assert.deepEqual(openPorts("hm-prod-2"), ["-/icmp", "51820/udp"]);
  assert.deepEqual(openPorts("hm-prod-3"), ["-/icmp", "3478/tcp", "3478/udp", "49152-49251/udp", "51820/udp", "5349/tcp", "5349/udp"]);
  const cluster = named(plan, "hardened-matrix-prod-cluster");
  assert.equal(cluster.type, "digitalocean:index/firewall:Firewall");
  const wg = ((cluster.inputs as Inputs).inboundRules as Inputs[]).find((r) => r.portRange === "51820")!;
  assert.deepEqual([wg.sourceTags, wg.sourceAddresses], [["hardened-matrix-prod"], undefined], "the mesh port is for the cluster's droplets only");
  for (const node of NODES) {
    const outbound = firewallsOf(plan, node).flatMap((f) => ((f.inputs as Inputs).outboundRules as Inputs[]).map((r) => r.protocol));
    assert.deepEqual([...new Set(outbound)].sort(), ["icmp", "tcp", "udp"], node);
  }
});

test("prod: no node forms a swarm on its own (formation over the mesh is a later component)", () => {
  for (const node of NODES) {
    const script = runcmd(userData(plan, node).doc);
    assert.doesNotMatch(script, /docker swarm init/, node);
    assert.match(script, new RegExp(`--hostname=${node} --advertise-tags=tag:hm-prod --ssh=true`));
  }
});

test("prod: admins and key; the docker provider goes to the first manager over the tailnet; cost", () => {
  const policy = JSON.parse(plan.files.find((f) => f.path === "cloud-tailnet-acl/policy.json")!.content);
  assert.deepEqual(policy.groups["group:hm-admins"], ["alice@example.org", "bob@example.org"]);
  const nodes = plan.outputs.nodes as Inputs;
  assert.equal((named(plan, "cloud-swarm-docker").inputs as Inputs).host, `ssh://root@${nodes["hm-prod-1"].tailnetIpv4}`);
  assert.equal(new Set(NODES.map((n) => nodes[n].tailnetIpv4)).size, 3, "every node has its own tailnet address");
  // 12 + 24 + 12 droplets + 31 GiB * 0.10 + Spaces for the backups (5).
  assert.equal(plan.outputs.estimatedMonthlyCostUsd, 56.1);
});

test("prod: each node's tailnet address is the device that joined after its droplet, not an older device of the same hostname", () => {
  // The mock tailnet lists, first, a stale device per hostname (a replaced droplet's), then the current one.
  const nodes = plan.outputs.nodes as Inputs;
  for (const n of NODES) {
    const [current, stale] = (["current", "stale"] as const).map((i) => (mockTailnetDevice(n, i, "tag:hm-prod").addresses as string[])[0]);
    assert.notEqual(current, stale);
    assert.equal(nodes[n].tailnetIpv4, current, `${n}: ${nodes[n].tailnetIpv4} is not the new device's address`);
    const wait = (named(plan, `cloud-${n}-bootstrapped`).inputs as Inputs).create as string;
    assert.ok(wait.includes(`root@${current} `) && !wait.includes(stale!), `${n}: bootstrap wait goes to ${wait}`);
  }
  assert.equal((named(plan, "cloud-swarm-docker").inputs as Inputs).host, `ssh://root@${(mockTailnetDevice("hm-prod-1", "current", "tag:hm-prod").addresses as string[])[0]}`);
});

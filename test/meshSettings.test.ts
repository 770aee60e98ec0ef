import assert from "node:assert/strict";
import { settingsFor, problemsOf } from "./support/settings";
import { test } from "node:test";
import { meshAddress, meshAddressCollisions, ipv4ToInt } from "../components/render/wireguard";

// The mesh settings: meshCidr, meshPskVersion, per-node meshKeyVersion.


const meshProblems = (o: Record<string, unknown>) => problemsOf("prod", o).filter((p) => p.startsWith("hardened-matrix:meshCidr") || p.startsWith("hardened-matrix:swarmAddressPool"));

test("prod: the default mesh range is accepted; versions default to 1", () => {
  const s = settingsFor("prod");
  assert.equal(s.meshCidr, "10.77.0.0/16");
  assert.equal(s.meshPskVersion, 1);
  assert.ok(s.nodes.every((n) => n.meshKeyVersion === undefined));
  assert.equal(settingsFor("prod", { "hardened-matrix:meshPskVersion": 4 }).meshPskVersion, 4);
});

test("meshCidr must be private and clear of the VPC, the swarm pool and the tailnet", () => {
  assert.deepEqual(meshProblems({ "hardened-matrix:meshCidr": "10.111.0.0/16" }), [
    'hardened-matrix:meshCidr: "10.111.0.0/16" overlaps vpcRange "10.111.0.0/24"; allowed: a private range clear of it',
  ]);
  assert.deepEqual(meshProblems({ "hardened-matrix:meshCidr": "10.20.128.0/20" }), [
    'hardened-matrix:meshCidr: "10.20.128.0/20" overlaps swarmAddressPool "10.20.0.0/16"; allowed: a private range clear of it',
  ]);
  const tailnet = meshProblems({ "hardened-matrix:meshCidr": "100.100.0.0/16" });
  assert.ok(tailnet.some((p) => p.includes("is not inside a private range")));
  assert.ok(tailnet.some((p) => p.includes('overlaps the tailnet range "100.64.0.0/10"')));
  assert.ok(meshProblems({ "hardened-matrix:meshCidr": "8.8.0.0/16" }).some((p) => p.includes("is not inside a private range")));
  assert.ok(meshProblems({ "hardened-matrix:meshCidr": "10.77.0.0/29" }).some((p) => p.includes("must be between a /16 and a /28")));
  assert.deepEqual(problemsOf("prod", { "hardened-matrix:meshCidr": "10.77.0.0" }), ['hardened-matrix:meshCidr: "10.77.0.0" is not an IPv4 CIDR range (a.b.c.d/n)']);
  assert.deepEqual(meshProblems({ "hardened-matrix:swarmAddressPool": "100.80.0.0/16" }), [
    'hardened-matrix:swarmAddressPool: "100.80.0.0/16" overlaps the tailnet range "100.64.0.0/10"; overlay addresses would shadow VPN addresses',
  ]);
  assert.deepEqual(meshProblems({ "hardened-matrix:meshCidr": "192.168.64.0/24" }), [
    `hardened-matrix:meshCidr: "192.168.64.0/24" overlaps Docker's local bridge pool "192.168.0.0/16" (docker0, docker_gwbridge); allowed: a range in 10.0.0.0/8 clear of the others`,
  ]);
  assert.ok(meshProblems({ "hardened-matrix:swarmAddressPool": "172.30.0.0/16" }).some((p) => p.includes(`overlaps Docker's local bridge pool "172.24.0.0/13"`)));
  assert.deepEqual(meshProblems({ "hardened-matrix:meshCidr": "172.16.0.0/16" }), [], "172.16/16 is private and outside Docker's pools");
  assert.ok(problemsOf("prod", { "hardened-matrix:meshPskVersion": 0 }).some((p) => p.startsWith("hardened-matrix:meshPskVersion:")));
});

test("two node names hashing to one address: a settings error naming both and how to resolve it", () => {
  const cidr = "10.77.0.0/28";
  const names = Array.from({ length: 40 }, (_, i) => `n${i}`);
  const [a, b, address] = meshAddressCollisions(names, cidr)[0]!;
  const nodes = [
    { name: "hm-prod-1", size: "s-1vcpu-2gb", roles: ["manager", "edge", "db", "turn"] },
    { name: a, size: "s-1vcpu-1gb", roles: [] },
    { name: b, size: "s-1vcpu-1gb", roles: [] },
  ];
  assert.deepEqual(meshProblems({ "hardened-matrix:meshCidr": cidr, "hardened-matrix:nodes": nodes }), [
    `hardened-matrix:meshCidr: nodes "${a}" and "${b}" both hash to ${address} in "${cidr}"; rename one of them or choose a larger meshCidr`,
  ]);
});

test("mesh addresses: inside the range, never its network or broadcast address, depending on the name only", () => {
  for (const cidr of ["10.77.0.0/16", "192.168.7.0/28", "172.16.4.0/24"]) {
    const [ip, len] = cidr.split("/") as [string, string];
    const base = ipv4ToInt(ip);
    const top = base + 2 ** (32 - Number(len)) - 1;
    for (let i = 0; i < 500; i++) {
      const a = ipv4ToInt(meshAddress(`node-${i}`, cidr));
      assert.ok(a > base && a < top, `${cidr}: ${meshAddress(`node-${i}`, cidr)}`);
    }
  }
  assert.equal(meshAddress("hm-prod-1", "10.77.0.0/16"), meshAddress("hm-prod-1", "10.77.0.0/16"));
  assert.notEqual(meshAddress("hm-prod-1", "10.77.0.0/16"), meshAddress("hm-prod-2", "10.77.0.0/16"));
});

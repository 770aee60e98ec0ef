import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { CloudPlatform, type CloudPlatformArgs } from "../components/platform/cloud";
import { Dns } from "../components/platform/dns";
import { Nodes } from "../components/platform/nodes";
import { firewallPlans } from "../components/render/firewall";
import { runUnderMocks, type ProgramRun } from "../plan/mockRuntime";

// The cloud components one by one, under mocks, with arguments the stacks do not use.
type Inputs = Record<string, any>;
let run: ProgramRun;
const storageErrors: string[] = [];

const platformArgs: CloudPlatformArgs = {
  stack: "unit",
  region: "ams3",
  vpcRange: "10.120.0.0/24",
  swarmAddressPool: "10.20.0.0/16",
  meshCidr: "10.77.0.0/16",
  meshPskVersion: 1,
  nodes: [
    { name: "n1", size: "s-1vcpu-2gb", roles: ["manager", "edge", "turn"] },
    { name: "n2", size: "s-2vcpu-4gb", roles: ["db"] },
  ],
  sshKeys: [],
  admins: ["a@example.net"],
  dockerSocketGid: 990,
  domain: "example.net",
  matrixFqdn: "matrix.example.net",
  serverName: "example.net",
  cloudflareZoneId: "00000000000000000000000000000000",
  acmeEmail: "",
  ports: { http: 80, https: 443, federation: 8448, admin: 9443 },
  turn: { fqdn: "turn.example.net", port: 3478, tlsPort: 5349, minPort: 49152, maxPort: 49200 },
  servesWellKnown: false,
  delegation: "none",
};

before(async () => {
  run = await runUnderMocks("unit", { values: {}, secretKeys: [] }, async () => {
    new Dns("dns", {
      zoneId: "z",
      domain: "example.net",
      matrixFqdn: "matrix.example.net",
      edgeIpv4: "192.0.2.10",
      turn: { fqdn: "matrix.example.net", ipv4: "192.0.2.99" },
      srv: { serverName: "example.net", port: 443 },
      caa: { issuer: "letsencrypt.org" },
    });
    new Nodes("mesh", {
      region: "ams3",
      vpcName: "v",
      vpcRange: "10.121.0.0/24",
      nodes: [{ name: "m1", size: "s-1vcpu-1gb", tags: ["t"] }, { name: "m2", size: "s-1vcpu-1gb", tags: ["t"] }],
      sshKeys: [],
      userData: { m1: "#cloud-config\n", m2: "#cloud-config\n" },
      volumes: [],
      reservedIpNodes: [],
      firewalls: firewallPlans({ clusterTag: "t", roleTag: (r) => `t-${r}`, httpPort: 80, httpsPort: 443, federationPort: 8448, turn: undefined, wireguardPort: 51820 }),
    });
    const platform = new CloudPlatform("cp", platformArgs);
    const attempt = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        storageErrors.push((e as Error).message);
      }
    };
    attempt(() => platform.storage("postgres", "edge", "70:70"));
    attempt(() => platform.storage("headscale", "edge", "0:0"));
    const mount = platform.storage("postgres", "db", "70:70");
    attempt(() => platform.storage("postgres", "db", "999:999"));
    platform.seal();
    attempt(() => platform.storage("acme", "edge", "1:1"));
    return { mount: pulumi.output(mount), cost: platform.outputs.estimatedMonthlyCostUsd, turn: platform.turnExternalIp };
  });
  assert.equal(run.error, undefined, String(run.error));
});

const byName = (name: string) => {
  const r = run.resources.find((x) => x.name === name);
  assert.ok(r, `no ${name}`);
  return r;
};

test("Dns: headscale and SRV records, one A record per name even when TURN shares the Matrix host, no iodef without an email", () => {
  const records = run.resources.filter((r) => r.type === "cloudflare:index/dnsRecord:DnsRecord" && r.parent === byName("dns").urn).map((r) => r.inputs as Inputs);
  const a = records.filter((r) => r.type === "A").map((r) => `${r.name}=${r.content}`).sort();
  assert.deepEqual(a, ["matrix.example.net=192.0.2.10"]);
  assert.deepEqual(records.filter((r) => r.type === "SRV").map((r) => r.name), ["_matrix-fed._tcp.example.net", "_matrix._tcp.example.net"]);
  assert.deepEqual(records.filter((r) => r.type === "CAA").map((r) => r.data.tag).sort(), ["issue", "issuewild"]);
  assert.equal(byName("dns").type, "hardened-matrix:cloud:Dns");
});

test("Nodes: firewalls apply to tag resources; the mesh port is open only to the cluster tag", () => {
  const fw = byName("t-cluster").inputs as Inputs;
  assert.deepEqual(fw.tags, ["t"]);
  const wg = (fw.inboundRules as Inputs[]).find((r) => r.portRange === "51820");
  assert.ok(wg);
  assert.equal(wg.protocol, "udp");
  assert.equal(wg.sourceAddresses, undefined);
  assert.deepEqual(wg.sourceTags, ["t"]);
  // Every tag a firewall or droplet names is a Tag resource of the component, registered once.
  const tags = run.resources.filter((r) => r.type === "digitalocean:index/tag:Tag" && r.parent === byName("mesh").urn).map((r) => (r.inputs as Inputs).name).sort();
  assert.deepEqual(tags, ["t", "t-edge"]);
  assert.deepEqual((byName("m1").inputs as Inputs).tags, ["t"]);
  assert.equal(byName("mesh").type, "hardened-matrix:cloud:Nodes");
});

test("CloudPlatform.storage: placed by role, one owner per purpose, nothing after seal", () => {
  assert.deepEqual(storageErrors, [
    'storage for "postgres" lives on the db node, not on the edge node',
    'no volume is planned for "headscale" on this stack',
    'storage for "postgres" is already owned by 70:70',
    'storage("acme") requested after the nodes\' cloud-init was rendered',
  ]);
  assert.deepEqual(run.outputs.mount, { type: "bind", source: "/mnt/hm-unit-postgres/postgres", readOnly: false });
  // The postgres directory is created only on the db node, for its owner.
  const n2 = byName("n2").inputs as Inputs;
  const n1 = byName("n1").inputs as Inputs;
  const text = (u: unknown) => String((u as { secret: string }).secret);
  assert.match(text(n2.userData), /install -d -m 0700 -o 70 -g 70 \/mnt\/hm-unit-postgres\/postgres/);
  assert.match(text(n2.userData), /^ *want=990$/m);
  assert.match(text(n1.userData), /^ *want=990$/m);
  assert.doesNotMatch(text(n1.userData), /hm-unit-postgres/);
  // Two nodes: no swarm formed in cloud-init.
  assert.doesNotMatch(text(n1.userData) + text(n2.userData), /swarm init/);
});

test("CloudPlatform: TURN advertises the TURN node's own address; cost uses the table", () => {
  const nodes = run.outputs as Inputs;
  assert.match(String(nodes.turn), /^203\.0\.113\./);
  const turnRecord = run.resources.find((r) => r.type === "cloudflare:index/dnsRecord:DnsRecord" && (r.inputs as Inputs).name === "turn.example.net");
  assert.equal((turnRecord?.inputs as Inputs).content, nodes.turn);
  // 12 + 24 + (10 + 20 + 1) GiB * 0.10
  assert.equal(nodes.cost, 39.1);
});

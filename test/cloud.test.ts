import assert from "node:assert/strict";
import { before, test } from "node:test";
import { estimateMonthlyCost, tablePrice } from "../components/cloud";
import { BOOTSTRAP_MARKER } from "../components/render/cloudInit";
import { firewallPlans } from "../components/render/firewall";
import { renderTailnetPolicy } from "../components/render/tailscaleAcl";
import { parseSettings } from "../components/settings";
import { planStack, type Plan } from "../plan/plan";
import { readStackConfig } from "../plan/stackConfig";
import { ATTACHMENT, DROPLET, dropletNames, FIREWALL, forbiddenInbound, named, ofType, raw, RECORD, userData, VOLUME, writeFile, type Inputs } from "./support/cloud";

// The real program, dev stack (one droplet carrying every role), under mocks.
let plan: Plan;
before(async () => {
  plan = await planStack("dev");
  assert.equal(plan.error, undefined, String(plan.error));
});

test("dev: one VPC with the configured range, one Debian droplet in it with cluster and role tags", () => {
  const [vpc, ...moreVpcs] = ofType(plan, "digitalocean:index/vpc:Vpc");
  assert.equal(moreVpcs.length, 0);
  assert.equal((vpc!.inputs as Inputs).ipRange, "10.110.0.0/24");
  assert.equal((vpc!.inputs as Inputs).region, "fra1");
  const droplets = ofType(plan, DROPLET);
  assert.deepEqual(droplets.map((d) => d.name), ["hm-dev-1"]);
  const d = droplets[0]!.inputs as Inputs;
  assert.equal(d.image, "debian-12-x64");
  assert.equal(d.size, "s-1vcpu-2gb");
  assert.equal(d.vpcUuid, vpc!.id);
  assert.deepEqual(d.tags, ["hardened-matrix-dev", "hardened-matrix-dev-manager", "hardened-matrix-dev-edge", "hardened-matrix-dev-db", "hardened-matrix-dev-turn"]);
  assert.deepEqual(d.sshKeys, ["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"]);
  assert.equal(d.monitoring, true);
  assert.equal(d.ipv6, true);
});

test("dev: user data is a secret that never replaces the droplet, and is written under files/", () => {
  const d = named(plan, "hm-dev-1");
  assert.deepEqual(d.options.ignoreChanges, ["userData"]);
  assert.equal((d.inputs as Inputs).userData, "[secret]");
  const file = plan.files.find((f) => f.path === "hm-dev-1/user-data.yaml");
  assert.ok(file?.secret, "user data file must be marked secret (0600)");
  assert.equal(file.content, raw(plan, d).userData);
});

test("dev: the node joins the tailnet with the deployment's key and tag, and the key file is removed", () => {
  const { doc } = userData(plan, "hm-dev-1");
  // The mock provider's key for the TailnetKey resource: the user data carries the key's output.
  assert.match(writeFile(doc, "/etc/hardened-matrix/tailscale-authkey"), /^tskey-auth-mock[A-Za-z0-9]{24}\n$/);
  const script = writeFile(doc, "/usr/local/sbin/hardened-matrix-bootstrap");
  assert.match(script, /tailscale up --auth-key=file:\/etc\/hardened-matrix\/tailscale-authkey --hostname=hm-dev-1 --advertise-tags=tag:hm-dev --ssh\nrm -f \/etc\/hardened-matrix\/tailscale-authkey/);
  assert.ok(script.trimEnd().endsWith(BOOTSTRAP_MARKER), "the bootstrap marker is the last step");
});

test("dev: a single node is its own swarm on its VPC address, labelled with all its roles", () => {
  const script = writeFile(userData(plan, "hm-dev-1").doc, "/usr/local/sbin/hardened-matrix-bootstrap");
  assert.match(script, /private=\$\(curl -fsS http:\/\/169\.254\.169\.254\/metadata\/v1\/interfaces\/private\/0\/ipv4\/address\)/);
  assert.match(script, /docker swarm init --advertise-addr "\$private" --listen-addr "\$private:2377" --data-path-addr "\$private" --default-addr-pool 10\.20\.0\.0\/16/);
  for (const role of ["manager", "edge", "db", "turn"]) assert.match(script, new RegExp(`--label-add hardened-matrix\\.role\\.${role}=true`));
});

test("dev: volumes for postgres, dendrite and acme: ext4, labelled, protected, retained, attached to the node", () => {
  const ids = dropletNames(plan);
  const volumes = ofType(plan, VOLUME);
  assert.deepEqual(volumes.map((v) => v.name).sort(), ["hm-dev-acme", "hm-dev-dendrite", "hm-dev-postgres"]);
  for (const v of volumes) {
    assert.equal(v.options.protect, true, `${v.name} protected`);
    assert.equal(v.options.retainOnDelete, true, `${v.name} retained`);
    const i = v.inputs as Inputs;
    assert.equal(i.initialFilesystemType, "ext4");
    assert.ok(i.initialFilesystemLabel.length <= 16, "ext4 labels are at most 16 characters");
    const attachment = ofType(plan, ATTACHMENT).find((a) => (a.inputs as Inputs).volumeId === v.id);
    assert.ok(attachment, `${v.name} is not attached`);
    assert.equal(ids.get((attachment.inputs as Inputs).dropletId), "hm-dev-1");
  }
});

test("dev: Traefik's ACME storage is a bind mount on the acme volume, created for Traefik's user by cloud-init", () => {
  const mounts = (named(plan, "traefik-service").inputs as Inputs).taskSpec.containerSpec.mounts as Inputs[];
  assert.deepEqual(mounts.find((m) => m.target === "/acme"), { type: "bind", source: "/mnt/hm-dev-acme/acme", target: "/acme", readOnly: false });
  const { doc } = userData(plan, "hm-dev-1");
  assert.ok((doc.mounts as string[][]).some((m) => m[0] === "LABEL=hm-acme" && m[1] === "/mnt/hm-dev-acme" && m[3]!.includes("nofail")));
  const script = writeFile(doc, "/usr/local/sbin/hardened-matrix-bootstrap");
  assert.match(script, /install -d -m 0700 -o 10001 -g 10001 \/mnt\/hm-dev-acme\/acme/);
  // The volume is mounted before the directory is made on it.
  assert.ok(script.indexOf("mount /mnt/hm-dev-acme") < script.indexOf("/mnt/hm-dev-acme/acme"));
  // Nobody asked for postgres/dendrite storage yet: their volumes are mounted but no directory is handed out.
  assert.doesNotMatch(script, /\/mnt\/hm-dev-postgres\/postgres/);
});

test("dev: the docker group has the configured gid before Docker is installed; daemon.json and the metadata block", () => {
  const { doc } = userData(plan, "hm-dev-1");
  const script = writeFile(doc, "/usr/local/sbin/hardened-matrix-bootstrap");
  const group = script.indexOf("groupadd --system --gid 999 docker");
  assert.ok(group >= 0 && group < script.indexOf("apt-get install -y docker-ce"));
  const daemon = JSON.parse(writeFile(doc, "/etc/docker/daemon.json"));
  assert.equal(daemon["no-new-privileges"], true);
  assert.deepEqual(daemon["log-opts"], { "max-size": "10m", "max-file": "3" });
  assert.equal(daemon["live-restore"], undefined, "Docker refuses swarm mode with live-restore");
  assert.match(writeFile(doc, "/etc/systemd/system/hardened-matrix-metadata-block.service"), /iptables -I DOCKER-USER 1 -d 169\.254\.169\.254\/32 -j DROP/);
  const sshd = writeFile(doc, "/etc/ssh/sshd_config.d/10-hardened-matrix.conf");
  assert.match(sshd, /^PasswordAuthentication no$/m);
  assert.match(sshd, /^ListenAddress 127\.0\.0\.1$/m);
  assert.equal(doc.ssh_pwauth, false);
  assert.ok((doc.packages as string[]).includes("unattended-upgrades"));
});

test("dev: the reserved IP is assigned to the edge node and the Matrix name points at it", () => {
  const ip = ofType(plan, "digitalocean:index/reservedIp:ReservedIp");
  assert.equal(ip.length, 1);
  const assignment = ofType(plan, "digitalocean:index/reservedIpAssignment:ReservedIpAssignment")[0]!.inputs as Inputs;
  assert.equal(dropletNames(plan).get(assignment.dropletId), "hm-dev-1");
  assert.equal(assignment.ipAddress, plan.outputs.edgeIpv4);
  const matrix = ofType(plan, RECORD).find((r) => (r.inputs as Inputs).name === "matrix.example.org")!.inputs as Inputs;
  assert.equal(matrix.type, "A");
  assert.equal(matrix.content, plan.outputs.edgeIpv4);
});

test("dev: firewalls open only the public surface, never a forbidden port, with explicit outbound rules", () => {
  assert.deepEqual(forbiddenInbound(plan), []);
  const ids = dropletNames(plan);
  const covering = ofType(plan, FIREWALL).filter((f) => ((f.inputs as Inputs).dropletIds as number[]).some((id) => ids.get(id) === "hm-dev-1"));
  const inbound = covering.flatMap((f) => (f.inputs as Inputs).inboundRules as Inputs[]).map((r) => `${r.portRange ?? "-"}/${r.protocol}`).sort();
  assert.deepEqual(inbound, ["-/icmp", "3478/tcp", "3478/udp", "443/tcp", "49152-49251/udp", "5349/tcp", "5349/udp", "80/tcp", "8448/tcp"]);
  const outbound = covering.flatMap((f) => (f.inputs as Inputs).outboundRules as Inputs[]).map((r) => r.protocol).sort();
  assert.deepEqual(outbound, ["icmp", "tcp", "udp"]);
});

test("firewall plans refuse a forbidden port, even inside a range", () => {
  const base = { prefix: "t", nodes: [{ name: "a", roles: ["edge", "turn"] }], edgePorts: [443] };
  assert.doesNotThrow(() => firewallPlans(base));
  assert.throws(() => firewallPlans({ ...base, edgePorts: [443, 22] }), /22\/tcp \(SSH/);
  assert.throws(() => firewallPlans({ ...base, turn: { port: 3478, tlsPort: 5349, minPort: 4000, maxPort: 5000 } }), /4789\/udp/);
});

test("dev: DNS records are never proxied; CAA allows only Let's Encrypt; no AAAA; the base domain serves well-known", () => {
  const records = ofType(plan, RECORD).map((r) => r.inputs as Inputs);
  for (const r of records.filter((x) => x.type === "A")) assert.equal(r.proxied, false, `${r.name} proxied`);
  assert.deepEqual(records.filter((r) => r.type === "A").map((r) => r.name).sort(), ["example.org", "matrix.example.org", "turn.example.org"]);
  assert.equal(records.filter((r) => r.type === "AAAA").length, 0);
  const caa = records.filter((r) => r.type === "CAA").map((r) => `${r.name} ${r.data.flags} ${r.data.tag} ${r.data.value}`).sort();
  assert.deepEqual(caa, ["example.org 0 iodef mailto:ops@example.org", "example.org 0 issue letsencrypt.org", "example.org 0 issuewild ;"]);
  assert.equal(records.filter((r) => r.type === "SRV").length, 0, "dev delegates with well-known");
  for (const r of records) assert.equal(r.zoneId, "0123456789abcdef0123456789abcdef");
});

test("dev: the tailnet policy lets admins reach SSH and the dashboard, nodes reach nodes, nothing else", () => {
  const policy = JSON.parse(plan.files.find((f) => f.path === "cloud-tailnet-acl/policy.json")!.content);
  assert.deepEqual(policy.groups, { "group:hardened-matrix-admins": ["ops@example.org"] });
  assert.deepEqual(policy.tagOwners, { "tag:hm-dev": ["autogroup:admin", "group:hardened-matrix-admins"] });
  assert.deepEqual(policy.acls, [
    { action: "accept", src: ["group:hardened-matrix-admins"], dst: ["tag:hm-dev:22", "tag:hm-dev:9443"] },
    { action: "accept", src: ["tag:hm-dev"], dst: ["tag:hm-dev:*"] },
  ]);
  assert.deepEqual(policy.ssh, [{ action: "accept", src: ["group:hardened-matrix-admins"], dst: ["tag:hm-dev"], users: ["root", "autogroup:nonroot"] }]);
  assert.equal((named(plan, "cloud-tailnet-acl").inputs as Inputs).overwriteExistingContent, true);
  assert.throws(() => renderTailnetPolicy({ admins: [], nodeTag: "tag:x", adminPorts: [22] }), /locks everyone out/);
});

test("dev: one pre-authorized, tagged, reusable, non-ephemeral key that expires within the hour, created after the policy", () => {
  const keys = ofType(plan, "tailscale:index/tailnetKey:TailnetKey");
  assert.equal(keys.length, 1);
  const k = keys[0]!;
  assert.deepEqual(
    { reusable: (k.inputs as Inputs).reusable, ephemeral: (k.inputs as Inputs).ephemeral, preauthorized: (k.inputs as Inputs).preauthorized, expiry: (k.inputs as Inputs).expiry, tags: (k.inputs as Inputs).tags },
    { reusable: true, ephemeral: false, preauthorized: true, expiry: 3600, tags: ["tag:hm-dev"] },
  );
  assert.equal((k.inputs as Inputs).recreateIfInvalid, "always", "a replacement node needs a key that has not expired");
  assert.equal((k.inputs as Inputs).key, undefined);
  assert.deepEqual(k.options.dependsOn, [named(plan, "cloud-tailnet-acl").urn]);
});

test("dev: services reach the swarm through SSH to the manager's tailnet address, never a published Docker API", () => {
  const provider = named(plan, "cloud-docker");
  const tailnetIp = (plan.outputs.nodes as Inputs)["hm-dev-1"].tailnetIpv4;
  assert.match(tailnetIp, /^100\./);
  assert.equal((provider.inputs as Inputs).host, `ssh://root@${tailnetIp}`);
  for (const r of plan.resources.filter((x) => x.type.startsWith("docker:index/"))) {
    assert.ok(r.provider.startsWith(`${provider.urn}::`), `${r.name} uses ${r.provider}`);
  }
});

test("dev: stack outputs: addresses, Matrix URL and a monthly cost from the price table", () => {
  const node = (plan.outputs.nodes as Inputs)["hm-dev-1"];
  assert.match(node.publicIpv4, /^203\.0\.113\./);
  assert.match(node.privateIpv4, /^10\.110\.0\./);
  assert.equal(plan.outputs.matrixUrl, "https://matrix.example.org");
  // s-1vcpu-2gb (12) + 31 GiB of volumes at 0.10; the reserved IP is free while assigned.
  assert.equal(plan.outputs.estimatedMonthlyCostUsd, 15.1);
  assert.equal(estimateMonthlyCost(["s-1vcpu-2gb", "s-2vcpu-4gb"], [10, 1], 1, tablePrice), 37.1);
  assert.throws(() => tablePrice("s-99vcpu"), /no price known/);
});

test("cloud settings: the zone id is required, the VPC must not overlap the Swarm pool, Headscale is refused", () => {
  const config = readStackConfig("dev");
  const rawValues = Object.fromEntries(
    Object.entries(config.values)
      .filter(([k]) => k.startsWith("hardened-matrix:"))
      .map(([k, v]) => [k.slice("hardened-matrix:".length), (() => { try { return JSON.parse(v); } catch { return v; } })()]),
  );
  assert.doesNotThrow(() => parseSettings("dev", rawValues));
  const problems = (over: Record<string, unknown>): string[] => {
    try {
      parseSettings("dev", { ...rawValues, ...over });
      return [];
    } catch (e) {
      return (e as { problems: string[] }).problems;
    }
  };
  assert.ok(problems({ cloudflareZoneId: "" }).some((p) => p.startsWith("hardened-matrix:cloudflareZoneId: is required")));
  assert.ok(problems({ cloudflareZoneId: "example.org" }).some((p) => p.startsWith('hardened-matrix:cloudflareZoneId: "example.org" is not a Cloudflare zone id')));
  assert.ok(problems({ vpcRange: "10.20.5.0/24" }).some((p) => p.includes("overlaps swarmAddressPool")));
  assert.ok(problems({ vpcRange: "8.8.8.0/24" }).some((p) => p.includes("is not inside a private range")));
  assert.ok(problems({ vpcRange: "10.0.0.0/8" }).some((p) => p.includes("between a /16 and a /28")));
  assert.ok(problems({ vpn: "headscale" }).some((p) => p.startsWith('hardened-matrix:vpn: "headscale" on DigitalOcean')));
});

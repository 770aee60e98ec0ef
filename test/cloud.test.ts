import assert from "node:assert/strict";
import { before, test } from "node:test";
import { estimateMonthlyCost, tablePrice } from "../components/platform/cloud";
import { BOOTSTRAP_MARKER, DAEMON_JSON_PATH, dockerGroupScript, dockerSocketCheck, METADATA_BLOCK_SCRIPT, SSHD_DROPIN_PATH, TAILSCALE_AUTHKEY_FILE } from "../components/render/cloudInit";
import { firewallPlans } from "../components/render/firewall";
import { renderTailnetPolicy } from "../components/render/tailscaleAcl";
import { DOCKER_SOCKET_GID, parseSettings } from "../components/settings";
import { planStack, type Plan } from "../plan/plan";
import { readStackConfig } from "../plan/stackConfig";
import { ATTACHMENT, DROPLET, dropletNames, firewallsOf, named, ofType, raw, RECORD, runcmd, userData, VOLUME, writeFile, type Inputs } from "./support/cloud";
import { plannedFile } from "./support/planned";

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
  // ForceNew at DigitalOcean (digitalocean/droplet/resource_droplet.go) and not needed by a running node.
  assert.deepEqual(d.options.ignoreChanges, ["userData", "sshKeys", "image", "monitoring"]);
  assert.equal(d.options.deleteBeforeReplace, true, "the old node goes (teardown, then delete) before its replacement");
  assert.deepEqual(d.options.replaceWith, [named(plan, "hm-dev-1-generation").urn]);
  assert.equal((d.inputs as Inputs).userData, "[secret]");
  const file = plan.files.find((f) => f.path === "hm-dev-1/user-data.yaml");
  assert.ok(file?.secret, "user data file must be marked secret (0600)");
  assert.equal(file.content, raw(plan, d).userData);
});

test("dev: the node joins the tailnet with the deployment's key and tag, and the key file is removed", () => {
  const { doc } = userData(plan, "hm-dev-1");
  // The mock provider's key for the TailnetKey resource: the user data carries the key's output.
  assert.match(writeFile(doc, TAILSCALE_AUTHKEY_FILE), /^tskey-auth-mock[A-Za-z0-9]{24}\n$/);
  const script = runcmd(doc);
  assert.match(script, /tailscale up --auth-key=file:\/run\/hardened-matrix\/tailscale-authkey --hostname=hm-dev-1 --advertise-tags=tag:hm-dev --ssh=true --timeout=300s\nrm -f \/run\/hardened-matrix\/tailscale-authkey/);
  assert.ok(script.trimEnd().endsWith(BOOTSTRAP_MARKER), "the bootstrap marker is the last step");
});

test("dev: the single node forms its swarm like any other, over its mesh address; cloud-init forms none", () => {
  const script = runcmd(userData(plan, "hm-dev-1").doc);
  assert.doesNotMatch(script, /docker swarm|docker node/);
  const mesh = (plan.outputs.nodes as Inputs)["hm-dev-1"].meshIpv4;
  const init = plannedFile(plan, "cloud-swarm-hm-dev-1-init/stdin.sh");
  assert.ok(init.includes(`docker swarm init --advertise-addr ${mesh} --listen-addr ${mesh}:2377 --data-path-addr ${mesh} --default-addr-pool 10.20.0.0/16`));
  const labels = plannedFile(plan, "cloud-swarm-labels/stdin.sh");
  assert.ok(labels.includes("reconcile hm-dev-1 'hardened-matrix.role.manager hardened-matrix.role.edge hardened-matrix.role.db hardened-matrix.role.turn'"));
  assert.equal(plan.resources.filter((r) => r.name.endsWith("-join")).length, 0);
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
  const script = runcmd(userData(plan, "hm-dev-1").doc);
  const prepare = script.indexOf("/usr/local/sbin/hm-prepare-volume /dev/disk/by-id/scsi-0DO_Volume_hm-dev-acme /mnt/hm-dev-acme ext4");
  const mkdir = script.indexOf("install -d -m 0700 -o 10001 -g 10001 /mnt/hm-dev-acme/acme");
  assert.ok(prepare >= 0 && mkdir > prepare, "the volume is mounted before the directory is made on it");
  // Postgres and Dendrite get their directories on their volumes, each for its own user.
  assert.match(script, /^install -d -m 0700 -o 70 -g 70 \/mnt\/hm-dev-postgres\/postgres$/m);
  assert.match(script, /^install -d -m 0700 -o 10002 -g 10002 \/mnt\/hm-dev-dendrite\/dendrite$/m);
  const pg = ((named(plan, "postgres-service").inputs as Inputs).taskSpec.containerSpec.mounts as Inputs[]).find((m) => m.target === "/var/lib/postgresql/data");
  assert.deepEqual(pg, { type: "bind", source: "/mnt/hm-dev-postgres/postgres", target: "/var/lib/postgresql/data", readOnly: false });
});

test("dev: the docker group has the configured gid before Docker is installed; daemon.json, metadata block, no OpenSSH", () => {
  const { doc } = userData(plan, "hm-dev-1");
  // bootcmd runs before the packages stage that installs docker.io.
  assert.equal(doc.bootcmd[0], "set -eu", "a failing step fails the bootcmd module");
  assert.deepEqual(doc.bootcmd.at(-1), ["sh", "-c", dockerGroupScript(DOCKER_SOCKET_GID)]);
  // The proxy runs in that group, and the bootstrap checks the socket is in it before its marker.
  assert.equal((named(plan, "socket-proxy-service").inputs as Inputs).taskSpec.containerSpec.user, `65534:${DOCKER_SOCKET_GID}`);
  const run = doc.runcmd as string[];
  const check = run.indexOf(dockerSocketCheck(DOCKER_SOCKET_GID));
  assert.ok(check >= 0 && check < run.findIndex((l) => l.includes("bootstrap-complete")));
  assert.ok((doc.packages as string[]).includes("docker.io"));
  const daemon = JSON.parse(writeFile(doc, DAEMON_JSON_PATH));
  assert.equal(daemon["no-new-privileges"], true);
  assert.equal(daemon["live-restore"], undefined, "Docker refuses swarm mode with live-restore");
  assert.match(writeFile(doc, METADATA_BLOCK_SCRIPT), /iptables -w -I DOCKER-USER 1 -d 169\.254\.169\.254\/32 -j REJECT/);
  assert.match(runcmd(doc), /systemctl enable --now hm-metadata-block\.service\niptables -w -C DOCKER-USER -d 169\.254\.169\.254\/32 -j REJECT/);
  assert.match(writeFile(doc, SSHD_DROPIN_PATH), /^PasswordAuthentication no$/m);
  assert.match(runcmd(doc), /systemctl mask ssh\.service ssh\.socket/);
  assert.equal(doc.ssh_pwauth, false);
  assert.ok((doc.packages as string[]).includes("unattended-upgrades"));
});

test("dev: the reserved IP is assigned to the edge node and the Matrix name points at it", () => {
  const ip = ofType(plan, "digitalocean:index/reservedIp:ReservedIp");
  assert.equal(ip.length, 1);
  assert.equal(ip[0]!.options.protect, true, "DNS points at it: it must survive");
  const assignment = ofType(plan, "digitalocean:index/reservedIpAssignment:ReservedIpAssignment")[0]!.inputs as Inputs;
  assert.equal(dropletNames(plan).get(assignment.dropletId), "hm-dev-1");
  assert.equal(assignment.ipAddress, plan.outputs.edgeIpv4);
  const matrix = ofType(plan, RECORD).find((r) => (r.inputs as Inputs).name === "matrix.example.org")!.inputs as Inputs;
  assert.equal(matrix.type, "A");
  assert.equal(matrix.content, plan.outputs.edgeIpv4);
});

test("dev: firewalls open only the public surface, never a forbidden port, with explicit outbound rules", () => {
  // No forbidden port: the policy pack (test/policy.test.ts).
  const covering = firewallsOf(plan, "hm-dev-1");
  const inbound = covering
    .flatMap((f) => (f.inputs as Inputs).inboundRules as Inputs[])
    .map((r) => `${r.portRange ?? "-"}/${r.protocol} from ${(r.sourceAddresses ?? r.sourceTags).join(" ")}`)
    .sort();
  assert.deepEqual(inbound, [
    "-/icmp from 0.0.0.0/0 ::/0",
    "3478/tcp from 0.0.0.0/0 ::/0",
    "3478/udp from 0.0.0.0/0 ::/0",
    "443/tcp from 0.0.0.0/0 ::/0",
    "49152-49251/udp from 0.0.0.0/0 ::/0",
    "51820/udp from hardened-matrix-dev",
    "80/tcp from 0.0.0.0/0 ::/0",
    "8448/tcp from 0.0.0.0/0 ::/0",
  ]);
  for (const f of covering) {
    assert.deepEqual(((f.inputs as Inputs).outboundRules as Inputs[]).map((r) => r.protocol).sort(), ["icmp", "tcp", "udp"], f.name);
  }
  // The tags exist as resources, so firewalls and droplets name tags that are there.
  const tagNames = ofType(plan, "digitalocean:index/tag:Tag").map((t) => (t.inputs as Inputs).name);
  for (const f of covering) for (const t of (f.inputs as Inputs).tags) assert.ok(tagNames.includes(t), t);
});

test("firewall plans refuse a forbidden port, even inside a range", () => {
  const base = { clusterTag: "c", roleTag: (r: string) => `c-${r}`, httpPort: 80, httpsPort: 443, federationPort: 8448, turn: undefined, wireguardPort: 51820 };
  assert.doesNotThrow(() => firewallPlans(base));
  assert.throws(() => firewallPlans({ ...base, federationPort: 22 }), /forbidden port\(s\) 22/);
  assert.throws(() => firewallPlans({ ...base, turn: { port: 3478, tlsPort: 5349, minPort: 4000, maxPort: 5000 } }), /forbidden port\(s\) 4789/);
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

test("dev: the tailnet policy lets admins reach SSH and the dashboard, nothing else (nodes talk over wg0 only)", () => {
  const policy = JSON.parse(plan.files.find((f) => f.path === "cloud-tailnet-acl/policy.json")!.content);
  assert.deepEqual(policy.groups, { "group:hm-admins": ["ops@example.org"] });
  assert.deepEqual(policy.tagOwners, { "tag:hm-dev": ["group:hm-admins"] });
  assert.deepEqual(policy.acls, [
    { action: "accept", src: ["group:hm-admins"], dst: ["tag:hm-dev:22,9443"] },
  ]);
  assert.deepEqual(policy.ssh, [{ action: "accept", src: ["group:hm-admins"], dst: ["tag:hm-dev"], users: ["root"] }]);
  assert.equal((named(plan, "cloud-tailnet-acl").inputs as Inputs).overwriteExistingContent, true);
  assert.throws(() => renderTailnetPolicy({ admins: [], nodeTag: "tag:x", adminPorts: [22], sshUsers: ["root"] }), /admins is empty/);
});

test("dev: the node's own pre-authorized, tagged, single-use, non-ephemeral key that expires within the hour, created after the policy, replaced with the node's generation", () => {
  const keys = ofType(plan, "tailscale:index/tailnetKey:TailnetKey");
  assert.deepEqual(keys.map((k) => k.name), ["cloud-tailnet-hm-dev-1-key"]);
  const k = keys[0]!;
  assert.deepEqual(
    { reusable: (k.inputs as Inputs).reusable, ephemeral: (k.inputs as Inputs).ephemeral, preauthorized: (k.inputs as Inputs).preauthorized, expiry: (k.inputs as Inputs).expiry, tags: (k.inputs as Inputs).tags },
    { reusable: false, ephemeral: false, preauthorized: true, expiry: 3600, tags: ["tag:hm-dev"] },
  );
  // A refresh marks a used or expired key invalid (resource_tailnet_key.go Read); only the generation replaces it.
  assert.equal((k.inputs as Inputs).recreateIfInvalid, "never");
  assert.deepEqual(k.options.replaceWith, [named(plan, "hm-dev-1-generation").urn]);
  assert.equal((k.inputs as Inputs).key, undefined);
  // The SDK sends replaceWith resources as dependencies too (runtime/resource.js gatherExplicitDependencies).
  assert.deepEqual(k.options.dependsOn, [named(plan, "hm-dev-1-generation").urn, named(plan, "cloud-tailnet-acl").urn].sort());
  assert.ok(named(plan, "hm-dev-1").options.propertyDependencies.userData?.includes(k.urn), "the droplet boots with it");
});

test("dev: services reach the swarm through SSH to the manager's tailnet address, never a published Docker API", () => {
  const provider = named(plan, "cloud-swarm-docker");
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
  // s-1vcpu-2gb (12) + 31 GiB of volumes at 0.10 + the Spaces subscription of the backups (5); the reserved IP is free while assigned.
  assert.equal(plan.outputs.estimatedMonthlyCostUsd, 20.1);
  assert.equal(estimateMonthlyCost(["s-1vcpu-2gb", "s-2vcpu-4gb"], [10, 1], 1, tablePrice), 37.1);
  assert.equal(estimateMonthlyCost(["s-1vcpu-2gb", "s-2vcpu-4gb"], [10, 1], 1, tablePrice, true), 42.1);
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
  assert.ok(problems({ vpn: "headscale" }).includes('hardened-matrix:nodes: has 0 nodes with role "headscale"; allowed: exactly one while vpn is "headscale"'));
});

test("dev: the docker provider waits until every node has finished its bootstrap", () => {
  const provider = named(plan, "cloud-swarm-docker");
  const waits = plan.resources.filter((r) => r.type === "command:local:Command" && r.name.endsWith("-bootstrapped"));
  assert.equal(waits.length, 1);
  // Transitively: provider <- labels <- init <- wg0 <- bootstrap marker.
  const deps = new Set<string>();
  const walk = (urn: string) => {
    for (const d of plan.resources.find((r) => r.urn === urn)?.options.dependsOn ?? []) if (!deps.has(d)) (deps.add(d), walk(d));
  };
  walk(provider.urn);
  for (const w of waits) {
    assert.ok(deps.has(w.urn));
    assert.match((w.inputs as Inputs).create, /^ssh .* root@100\.\d+\.\d+\.\d+ 'timeout 900 sh -c "until test -f \/var\/lib\/hardened-matrix\/bootstrap-complete; do sleep 5; done"'$/);
  }
});

test("a deployer tag reaches the tailnet policy the program owns (CI runners: SSH to the nodes only)", async () => {
  const withCi = await planStack("dev", { "hardened-matrix:deployerTag": "tag:hm-ci" });
  assert.equal(withCi.error, undefined);
  const policy = JSON.parse(String(raw(withCi, named(withCi, "cloud-tailnet-acl")).acl));
  assert.deepEqual(policy.tagOwners["tag:hm-ci"], ["group:hm-admins"]);
  assert.ok(policy.acls.some((r: Inputs) => r.src[0] === "tag:hm-ci" && r.dst.join() === "tag:hm-dev:22"));
  const plain = JSON.parse(String(raw(plan, named(plan, "cloud-tailnet-acl")).acl));
  assert.equal(JSON.stringify(plain).includes("hm-ci"), false);
});

import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";




import { before, test } from "node:test";
import { pairPresharedKey, wireguardPrivateKey, wireguardPublicKey } from "../components/render/wireguard";
import { cidrsOverlap } from "../components/settings";
import { planStack, stableJson, type Plan } from "../plan/plan";
import { FIREWALL, named, ofType, raw, type Inputs } from "./support/cloud";
import { checkPlan } from "../plan/policyRunner";
import { FORBIDDEN_INBOUND_PORTS } from "../components/render/firewall";
import { planToDisk } from "./support/plan";
import { findTool, skipReason } from "./support/realTool";
import { meshArtifacts, tokenFetchOf, type MeshNodeArtifacts } from "./support/meshPlan";

// The prod stack's private network under mocks: the WireGuard mesh, the swarm scripts, the provider.
let plan: Plan;
let mesh: MeshNodeArtifacts[];
before(async () => {
  plan = await planStack("prod");
  assert.equal(plan.error, undefined, String(plan.error));
  mesh = meshArtifacts(plan);
});

const NODES = ["hm-prod-1", "hm-prod-2", "hm-prod-3"];
const COMMAND = "command:local:Command";

test("meshArtifacts: every node with its addresses, wg0.conf and scripts, first manager first", () => {
  assert.deepEqual(mesh.map((n) => n.name), NODES);
  const [first, ...others] = mesh;
  assert.ok(first!.scripts.init && first!.scripts.label && !first!.scripts.join);
  for (const n of others) assert.ok(n.scripts.join && !n.scripts.init && n.joinCreate && n.tokenFetch, n.name);
  for (const n of mesh) {
    assert.match(n.meshAddress, /^10\.77\.\d+\.\d+$/);
    assert.match(n.vpcAddress, /^\d+\.\d+\.\d+\.\d+$/);
    assert.match(n.wgConf, new RegExp(`^Address = ${n.meshAddress.replace(/\./g, "\\.")}/32$`, "m"));
    assert.ok(n.scripts.wgApply.includes(n.wgConf));
  }
  for (const n of others) {
    // The token is read from the first manager over the VPN, the worker or manager one by role.
    assert.equal(tokenFetchOf(n.joinCreate!).host, first!.tailnetAddress, n.name);
    assert.deepEqual(n.tokenFetch, ["docker", "swarm", "join-token", "-q", n.roles.includes("manager") ? "manager" : "worker"], n.name);
  }
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

const tool = { wg: findTool("wg", "wireguard-tools"), shellcheck: findTool("shellcheck", "shellcheck") };
const field = (conf: string, key: string): string[] => [...conf.matchAll(new RegExp(`^${key} = (.+)$`, "gm"))].map((m) => m[1]!);

test("public keys: what `wg pubkey` prints for each node's delivered private key, in every peer's file", { skip: !tool.wg && skipReason("wg", "wireguard-tools") }, () => {
  for (const n of mesh) {
    const [privateKey] = field(n.wgConf, "PrivateKey");
    const printed = execFileSync(tool.wg!, ["pubkey"], { input: `${privateKey}\n`, encoding: "utf8" }).trim();
    assert.equal(n.publicKey, printed, n.name);
    for (const other of mesh.filter((o) => o !== n)) assert.ok(field(other.wgConf, "PublicKey").includes(printed));
  }
  // And for keys wg itself generated: the derivation is X25519, not something that agrees only with itself.
  for (let i = 0; i < 5; i++) {
    const generated = execFileSync(tool.wg!, ["genkey"], { encoding: "utf8" }).trim();
    assert.equal(wireguardPublicKey(generated), execFileSync(tool.wg!, ["pubkey"], { input: `${generated}\n`, encoding: "utf8" }).trim());
    // A generated key is already clamped: clamping it again changes nothing.
    assert.equal(wireguardPrivateKey(Buffer.from(generated, "base64")), generated);
  }
});

test("preshared keys: the same on both ends of a pair, different for every pair; private keys differ", () => {
  const psk = (a: MeshNodeArtifacts, b: MeshNodeArtifacts): string => {
    const peer = a.wgConf.split("[Peer]").find((p) => p.includes(`PublicKey = ${b.publicKey}\n`));
    assert.ok(peer);
    return field(peer, "PresharedKey")[0]!;
  };
  const seen = new Set<string>();
  for (const [i, a] of mesh.entries()) {
    for (const b of mesh.slice(i + 1)) {
      assert.equal(psk(a, b), psk(b, a), `${a.name}-${b.name}`);
      assert.ok(!seen.has(psk(a, b)), "a PSK is reused");
      seen.add(psk(a, b));
    }
  }
  assert.equal(new Set(mesh.map((n) => field(n.wgConf, "PrivateKey")[0])).size, mesh.length);
  const master = Buffer.alloc(32, 7);
  assert.equal(pairPresharedKey(master, "a", "b"), pairPresharedKey(master, "b", "a"));
  assert.notEqual(pairPresharedKey(master, "a", "b"), pairPresharedKey(master, "a", "c"));
  assert.notEqual(pairPresharedKey(master, "a", "b"), pairPresharedKey(Buffer.alloc(32, 8), "a", "b"), "a new master rotates the PSK");
  // The names are separated, so "ab"+"c" and "a"+"bc" are different pairs.
  assert.notEqual(pairPresharedKey(master, "ab", "c"), pairPresharedKey(master, "a", "bc"));
});

test("swarm scripts: init and join use mesh addresses only; the pool is the configured one", () => {
  const meshIps = new Set(mesh.map((n) => n.meshAddress));
  const first = mesh[0]!;
  const scripts = mesh.flatMap((n) => [n.scripts.init, n.scripts.join, n.scripts.label].filter((s): s is string => !!s));
  assert.equal(scripts.length, mesh.length + 1);
  for (const s of scripts) {
    for (const ip of s.match(/\b\d+\.\d+\.\d+\.\d+\b(?!\/)/g) ?? []) assert.ok(meshIps.has(ip), `${ip} is not a mesh address`);
  }
  assert.ok(first.scripts.init!.includes(`--advertise-addr ${first.meshAddress} --listen-addr ${first.meshAddress}:2377 --data-path-addr ${first.meshAddress} --default-addr-pool 10.20.0.0/16`));
  for (const n of mesh.slice(1)) {
    assert.ok(n.scripts.join!.includes(`--advertise-addr ${n.meshAddress} --listen-addr ${n.meshAddress}:2377 --data-path-addr ${n.meshAddress} --token "$token" ${first.meshAddress}:2377`), n.name);
    assert.doesNotMatch(n.scripts.join!, /--token [^"]/, "the token is never spelled out on a command line of the script");
  }
});

test("secrets: wg0 stdin is secret; no private key or PSK in clear in resources.json", () => {
  const json = stableJson(plan.resources);
  const secrets = mesh.flatMap((n) => [...field(n.wgConf, "PrivateKey"), ...field(n.wgConf, "PresharedKey")]);
  assert.ok(secrets.length >= 3 + 3);
  for (const s of secrets) assert.ok(!json.includes(s), `in clear in resources.json: ${s.slice(0, 12)}...`);
  for (const r of ofType(plan, COMMAND).filter((c) => /-wg0$/.test(c.name))) {
    assert.equal((r.inputs as Inputs).stdin, "[secret]", r.name);
    assert.match(String(raw(plan, r).create), /^ssh .* root@100\.\d+\.\d+\.\d+ timeout 300 sh -s$/, "the script travels on stdin, not argv");
    const f = plan.files.find((x) => x.path === `${r.name}/stdin.sh`);
    assert.ok(f?.secret, `${r.name}/stdin.sh is written 0600`);
  }
  for (const r of ofType(plan, COMMAND).filter((c) => /-join$/.test(c.name))) {
    assert.match(String(raw(plan, r).create), /\| ssh .* root@100\.\d+\.\d+\.\d+ timeout 300 sh -s$/, "the script travels on stdin, not argv");
    assert.deepEqual(r.options.additionalSecretOutputs, ["stdout", "stderr"], r.name);
  }
  for (const d of ofType(plan, "digitalocean:index/droplet:Droplet")) {
    const ud = JSON.stringify(raw(plan, d).userData);
    for (const s of secrets) assert.ok(!ud.includes(s), "mesh secrets never go into user data (the metadata service serves it)");
    assert.doesNotMatch(ud, /PrivateKey|SWMTKN/);
  }
});

test("join tokens: no planned command or script holds one, prints one, or passes one in argv", () => {
  const commands = ofType(plan, COMMAND);
  assert.ok(commands.length >= 3 + 3 + 1);
  const texts = plan.files.filter((f) => /\/(stdin|create)\.sh$/.test(f.path));
  assert.ok(texts.length >= commands.length);
  for (const f of texts) {
    assert.doesNotMatch(f.content, /SWMTKN-\d-[0-9a-z]{10,}/, `${f.path} holds a token`);
    // A node's script never reads a token (the only reason to would be to print it)...
    if (f.path.endsWith("stdin.sh")) assert.doesNotMatch(f.content, /join-token/, f.path);
    // ...and the deployer reads it only into a variable that only printf (a builtin, to a pipe) uses.
    if (f.path.endsWith("create.sh")) {
      const lines = f.content.split("\n");
      if (!lines.some((l) => l.includes("join-token"))) continue;
      assert.equal(lines.filter((l) => /^hm_secret=\$\(ssh .* -n root@\S+ docker swarm join-token -q (worker|manager)\) \|\| \{ echo "[^$]*" >&2; exit 1; \}$/.test(l)).length, 1, f.path);
      for (const line of lines.filter((l) => /\$\{?hm_secret/.test(l))) {
        assert.match(line, /^(case \$hm_secret in|\{ printf 'token=%s\\n' "\$hm_secret"; cat; \} \| ssh [^$]*)$/, `${f.path}: ${line}`);
      }
    }
  }
  // What the init prints (the mock runtime prints what `# hm-prints:` names): its node id, no token.
  const init = plan.files.find((f) => f.path.endsWith("-init/stdin.sh"))!;
  assert.match(init.content, /^# hm-prints: node-id$/m);
  for (const r of commands) assert.doesNotMatch(JSON.stringify(raw(plan, r)), /SWMTKN-\d-[0-9a-z]{10,}/, r.name);
});

test("the docker provider reaches the first manager over the VPN, after the cluster is labelled", () => {
  const provider = named(plan, "cloud-swarm-docker");
  const host = String((provider.inputs as Inputs).host);
  assert.equal(host, `ssh://root@${mesh[0]!.tailnetAddress}`);
  assert.ok(cidrsOverlap(`${mesh[0]!.tailnetAddress}/32`, "100.64.0.0/10"), "a tailnet address");
  assert.ok(provider.options.dependsOn.includes(named(plan, "cloud-swarm-labels").urn));
  // Deployed stacks knew it as cloud-docker under the platform: without the alias every docker resource would be replaced.
  assert.deepEqual(provider.options.aliases.map((a) => JSON.parse(a).spec.name), ["cloud-docker"]);
  assert.ok(provider.options.aliases[0]!.includes(named(plan, "cloud").urn));
  for (const r of plan.resources.filter((x) => x.type.startsWith("docker:index/"))) assert.ok(r.provider.startsWith(`${provider.urn}::`), r.name);
});

test("overlays fit inside wg0: every overlay network has MTU 1420", () => {
  const networks = ofType(plan, "docker:index/network:Network");
  assert.ok(networks.length >= 3);
  for (const n of networks) {
    assert.equal((n.inputs as Inputs).driver, "overlay", n.name);
    assert.equal((n.inputs as Inputs).options["com.docker.network.driver.mtu"], "1420", n.name);
  }
});

test("firewalls: no swarm port open anywhere; WireGuard only from the deployment's own droplets", async () => {
  // The policy pack's firewall rule covers the swarm ports (policy/policies.ts).
  const violations = await checkPlan(plan);
  assert.deepEqual(violations.filter((v) => v.policy === "firewall-no-forbidden-port"), []);
  assert.ok([2377, 7946, 4789].every((p) => FORBIDDEN_INBOUND_PORTS.includes(p)), "the pack forbids the swarm ports");
  const wgRules = ofType(plan, FIREWALL).flatMap((fw) => ((fw.inputs as Inputs).inboundRules as Inputs[]).filter((r) => String(r.portRange) === "51820" || portCovers(String(r.portRange), 51820)));
  assert.ok(wgRules.length >= 1);
  for (const r of wgRules) {
    assert.equal(r.protocol, "udp");
    assert.equal(r.sourceAddresses, undefined, "WireGuard is never open to addresses, only to the cluster tag");
    assert.deepEqual(r.sourceTags, ["hardened-matrix-prod"]);
  }
});

function portCovers(range: string, port: number): boolean {
  if (range === "all" || range === "1-65535") return true;
  const [lo, hi] = range.split("-").map(Number);
  return port >= lo! && port <= (hi ?? lo)!;
}

test("shellcheck passes every script the plan delivers to a node (stdin) or runs locally (create, delete)", { skip: !tool.shellcheck && skipReason("shellcheck", "shellcheck") }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-mesh-sh-"));
  try {
    const scripts = plan.files.filter((f) => /\/(stdin|create|delete)\.sh$/.test(f.path));
    assert.ok(scripts.length >= 3 * 2 + 4);
    assert.equal(scripts.filter((f) => f.path.endsWith("-teardown/delete.sh")).length, mesh.length, "a teardown per node");
    for (const f of scripts) {
      const file = path.join(dir, f.path.replace(/\//g, "__"));
      writeFileSync(file, /(create|delete)\.sh$/.test(f.path) ? `#!/bin/sh\n${f.content}\n` : f.content);
      const r = spawnSync(tool.shellcheck!, ["-s", "sh", "-S", "style", file], { encoding: "utf8" });
      assert.equal(r.status, 0, `${f.path}:\n${r.stdout}${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("meshArtifacts reads a plan written by `npm run plan` exactly as the one in memory", () => {
  const onDisk = planToDisk("prod");
  try {
    assert.deepEqual(meshArtifacts(onDisk), mesh);
  } finally {
    rmSync(path.dirname(onDisk.dir), { recursive: true, force: true });
  }
});

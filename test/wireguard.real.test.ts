import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { chmodSync, mkdirSync } from "node:fs";
import { renderWireguardApplyScript, renderWireguardConfig } from "../components/render/wireguard";
import { planStack } from "../plan/plan";
import { meshArtifacts, type MeshNodeArtifacts } from "./support/meshPlan";
import { findTool, skipReason } from "./support/realTool";

// The real wg-quick brings each planned wg0.conf up on a wireguard-go interface, in a network
// namespace this test creates (with a stand-in "droplet" interface, address and route in it).
// It must accept the file, configure exactly the planned keys, PSKs, peers and endpoints, and
// touch nothing but its own interface: a /32 address, MTU 1420, one /32 route per peer, no rules.
// No packet is sent: there are no keepalives and nothing is routed into the tunnel.

const tools = {
  ip: findTool("ip", "iproute2"),
  wg: findTool("wg", "wireguard-tools"),
  wgQuick: findTool("wg-quick", "wireguard-tools"),
  wireguardGo: findTool("wireguard-go", "wireguard-go"),
};
const isRoot = process.getuid?.() === 0;
const skip = !tools.ip ? skipReason("ip", "iproute2")
  : !tools.wg ? skipReason("wg", "wireguard-tools")
  : !tools.wgQuick ? skipReason("wg-quick", "wireguard-tools")
  : !tools.wireguardGo ? skipReason("wireguard-go", "wireguard-go")
  : !isRoot ? "network namespaces need root here (CI runs as root)" : false;

const NS = `hm-wgq-${process.pid}`;
let dir = "";
let mesh: MeshNodeArtifacts[] = [];
// wireguard-go's control sockets share /var/run/wireguard: an interface name unique to this run.
const ifname = (i: number) => `hmq${process.pid % 100000}x${i}`.slice(0, 15);
// The kernel here may advertise WireGuard without it working; wg-quick falls back to wireguard-go.
const env = { ...process.env, WG_QUICK_USERSPACE_IMPLEMENTATION: tools.wireguardGo ?? "", WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: "1" };

function inNs(cmd: string, args: string[]): string {
  return execFileSync(tools.ip!, ["netns", "exec", NS, cmd, ...args], { encoding: "utf8", env, timeout: 20_000 });
}

before(async () => {
  if (skip) return;
  const plan = await planStack("prod");
  assert.equal(plan.error, undefined, String(plan.error));
  mesh = meshArtifacts(plan);
  dir = mkdtempSync(path.join(tmpdir(), "hm-wgq-"));
  execFileSync(tools.ip!, ["netns", "add", NS]);
  // The droplet's own network, which wg-quick must leave alone.
  inNs(tools.ip!, ["link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"]);
  inNs(tools.ip!, ["address", "add", "10.111.0.5/24", "dev", "eth1"]);
  inNs(tools.ip!, ["link", "set", "eth1p", "up"]);
  inNs(tools.ip!, ["link", "set", "eth1", "up"]);
  inNs(tools.ip!, ["route", "add", "default", "via", "10.111.0.1", "dev", "eth1"]);
});

after(() => {
  if (skip) return;
  // Deleting the namespace removes its interfaces; wireguard-go exits when its tun goes away.
  for (let i = 0; i <= mesh.length; i++) spawnSync(tools.ip!, ["netns", "exec", NS, tools.ip!, "link", "del", ifname(i)], { stdio: "ignore" });
  spawnSync(tools.ip!, ["netns", "del", NS], { stdio: "ignore" });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("wg-quick brings every planned wg0.conf up with exactly the planned peers, touching only its interface", { skip }, () => {
  assert.equal(mesh.length, 3);
  const before = { routes: inNs(tools.ip!, ["-4", "route", "show", "table", "all"]), rules: inNs(tools.ip!, ["-4", "rule"]), eth1: inNs(tools.ip!, ["-4", "address", "show", "dev", "eth1"]) };
  for (const [i, node] of mesh.entries()) {
    const name = ifname(i);
    const file = path.join(dir, `${name}.conf`);
    writeFileSync(file, node.wgConf, { mode: 0o600 });
    inNs(tools.wgQuick!, ["up", file]);
    try {
      const [own, ...peers] = inNs(tools.wg!, ["show", name, "dump"]).trim().split("\n").map((l) => l.split("\t"));
      assert.equal(own![1], node.publicKey, `${node.name}: the interface's public key is the planned one`);
      assert.equal(own![2], "51820");
      const others = mesh.filter((o) => o !== node);
      assert.equal(peers.length, others.length);
      for (const o of others) {
        const p = peers.find((x) => x[0] === o.publicKey);
        assert.ok(p, `${node.name} has peer ${o.name}`);
        assert.equal(p[2], `${o.vpcAddress}:51820`);
        assert.equal(p[3], `${o.meshAddress}/32`);
        assert.equal(p[7], "off", "no keepalive: nothing is sent unless the swarm talks");
        // The same preshared key on both ends of the pair.
        const back = o.wgConf.split("[Peer]").find((s) => s.includes(`PublicKey = ${node.publicKey}\n`));
        assert.ok(back?.includes(`PresharedKey = ${p[1]}\n`), `${node.name}<->${o.name} PSK`);
      }
      assert.match(inNs(tools.ip!, ["link", "show", name]), /mtu 1420 /);
      assert.deepEqual(inNs(tools.ip!, ["-4", "-o", "address", "show", "dev", name]).trim().split("\n").map((l) => l.split(/\s+/)[3]), [`${node.meshAddress}/32`]);
      const routes = inNs(tools.ip!, ["-4", "route", "show", "dev", name]).trim().split("\n").map((l) => l.split(" ")[0]).sort();
      assert.deepEqual(routes, others.map((o) => o.meshAddress).sort(), "one /32 route per peer, nothing else");
      assert.equal(inNs(tools.ip!, ["-4", "rule"]), before.rules, "no policy routing");
      assert.equal(inNs(tools.ip!, ["-4", "address", "show", "dev", "eth1"]), before.eth1);
      assert.match(inNs(tools.ip!, ["-4", "route", "show"]), /^default via 10\.111\.0\.1 dev eth1/m);
    } finally {
      inNs(tools.wgQuick!, ["down", file]);
    }
    assert.equal(inNs(tools.ip!, ["-4", "route", "show", "table", "all"]), before.routes, `${node.name}: down restores the routes`);
  }
});

test("the wg0 apply script, with real wg, wg-quick and ip: installs, keeps, syncs peers and routes in place, restarts on a new address", { skip }, () => {
  const name = ifname(mesh.length);
  const node = mesh[0]!;
  const shims = path.join(dir, "bin");
  mkdirSync(shims, { recursive: true });
  // systemd stand-in: wg-quick@<if>.service is `wg-quick up|down` on the file the script installed.
  writeFileSync(
    path.join(shims, "systemctl"),
    `#!/bin/sh
case $1 in enable|daemon-reload) exit 0 ;; is-active) unit=$3 ;; *) unit=$2 ;; esac
i=\${unit#wg-quick@}; i=\${i%.service}; f=${dir}/etc-wg/$i.conf
case $1 in
  is-active) ip link show "$i" >/dev/null 2>&1 ;;
  start) wg-quick up "$f" ;;
  restart) wg-quick down "$f" && wg-quick up "$f" ;;
  *) exit 1 ;;
esac
`,
  );
  chmodSync(path.join(shims, "systemctl"), 0o755);
  const apply = (conf: string) => {
    const script = renderWireguardApplyScript(conf, name).split("/etc/wireguard").join(`${dir}/etc-wg`).split("/etc/systemd/system").join(`${dir}/systemd`);
    const r = spawnSync(tools.ip!, ["netns", "exec", NS, "sh", "-s"], { input: script, encoding: "utf8", timeout: 30_000, env: { ...env, PATH: `${shims}:/usr/sbin:/usr/bin:/sbin:/bin` } });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const ifindex = () => inNs(tools.ip!, ["-o", "link", "show", name]).split(":")[0];
  const routes = () => inNs(tools.ip!, ["-4", "route", "show", "dev", name]).trim().split("\n").map((l) => l.split(" ")[0]).sort();
  const peerKeys = () => inNs(tools.wg!, ["show", name, "peers"]).trim().split("\n").sort();
  const privateKey = /^PrivateKey = (.+)$/m.exec(node.wgConf)![1]!;
  const others = mesh.slice(1);
  try {
    assert.match(apply(node.wgConf), /^changed=1$/m);
    const first = ifindex();
    assert.deepEqual(routes(), others.map((o) => o.meshAddress).sort());
    assert.deepEqual(peerKeys(), others.map((o) => o.publicKey).sort());

    assert.match(apply(node.wgConf), /^changed=0$/m);
    assert.equal(ifindex(), first, "an unchanged file leaves the interface alone");

    // hm-prod-2 leaves, a new node arrives: synced in place, routes follow.
    const newKey = execFileSync(tools.wg!, ["genkey"], { encoding: "utf8" }).trim();
    const newPeer = { name: "hm-prod-9", publicKey: execFileSync(tools.wg!, ["pubkey"], { input: newKey, encoding: "utf8" }).trim(), presharedKey: execFileSync(tools.wg!, ["genpsk"], { encoding: "utf8" }).trim(), meshAddress: "10.77.9.9", endpoint: "10.111.0.99" };
    const kept = others[1]!;
    const keptPsk = /PresharedKey = (.+)/.exec(node.wgConf.split("[Peer]").find((p) => p.includes(kept.publicKey))!)![1]!;
    const peers = [{ name: kept.name, publicKey: kept.publicKey, presharedKey: keptPsk, meshAddress: kept.meshAddress, endpoint: kept.vpcAddress }, newPeer];
    const moved = (address: string) => renderWireguardConfig({ name: node.name, privateKey, meshAddress: address, listenPort: 51820, peers });
    assert.match(apply(moved(node.meshAddress)), /^changed=1$/m);
    assert.equal(ifindex(), first, "a peer change does not restart the interface");
    assert.deepEqual(peerKeys(), [kept.publicKey, newPeer.publicKey].sort());
    assert.deepEqual(routes(), [kept.meshAddress, "10.77.9.9"].sort());

    assert.match(apply(moved("10.77.1.1")), /^changed=1$/m);
    assert.notEqual(ifindex(), first, "a new own address restarts wg-quick");
    assert.match(inNs(tools.ip!, ["-4", "-o", "address", "show", "dev", name]), /inet 10\.77\.1\.1\/32 /);
    assert.deepEqual(routes(), [kept.meshAddress, "10.77.9.9"].sort());
  } finally {
    spawnSync(tools.ip!, ["netns", "exec", NS, tools.wgQuick!, "down", `${dir}/etc-wg/${name}.conf`], { env, stdio: "ignore" });
  }
});

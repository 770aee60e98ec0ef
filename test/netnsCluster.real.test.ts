import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { clusterSkipReason, hasInterpreter, NetnsCluster, parsePcap, type Capture, type CapturedPacket } from "./support/netnsCluster";
import { eventually } from "./support/realTool";

// The harness judged by the real programs: three Debian dockerd engines, each in its own network namespace,
// joined into one swarm by hand over a wireguard-go mesh brought up by the real wg-quick from configs written
// here. All traffic stays on a bridge inside a namespace this test creates.

const skip = clusterSkipReason();
const WG_PORT = 51820;
const nodes = [
  { name: "n1", vpcAddress: "10.110.0.11/24", mesh: "10.99.0.1" },
  { name: "n2", vpcAddress: "10.110.0.12/24", mesh: "10.99.0.2" },
  { name: "n3", vpcAddress: "10.110.0.13/24", mesh: "10.99.0.3" },
];
const vpcIp = (n: (typeof nodes)[number]): string => n.vpcAddress.split("/")[0];

function wg(args: string[], input?: string): string {
  return execFileSync("wg", args, { input, encoding: "utf8", timeout: 5000 }).trim();
}

/** wg-quick configs for a full mesh: one key per node, one PSK per pair. */
function meshConfigs(): Map<string, string> {
  const keys = new Map(nodes.map((n) => {
    const priv = wg(["genkey"]);
    return [n.name, { priv, pub: wg(["pubkey"], priv) }];
  }));
  const psk = new Map<string, string>();
  const pairPsk = (a: string, b: string): string => {
    const k = [a, b].sort().join("+");
    if (!psk.has(k)) psk.set(k, wg(["genpsk"]));
    return psk.get(k)!;
  };
  return new Map(
    nodes.map((n) => [
      n.name,
      [
        "[Interface]",
        `Address = ${n.mesh}/24`,
        `ListenPort = ${WG_PORT}`,
        `PrivateKey = ${keys.get(n.name)!.priv}`,
        "MTU = 1420",
        ...nodes
          .filter((p) => p !== n)
          .flatMap((p) => [
            "",
            "[Peer]",
            `PublicKey = ${keys.get(p.name)!.pub}`,
            `PresharedKey = ${pairPsk(n.name, p.name)}`,
            `AllowedIPs = ${p.mesh}/32`,
            `Endpoint = ${vpcIp(p)}:${WG_PORT}`,
            "PersistentKeepalive = 25",
          ]),
        "",
      ].join("\n"),
    ]),
  );
}

/** Packets grouped by what they are, with counts: readable in a failure message. */
function summarize(ps: CapturedPacket[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of ps) {
    const icmp = p.icmp ? ` icmp ${p.icmp.type}/${p.icmp.code}${p.icmp.quoted ? ` quoting proto ${p.icmp.quoted.proto} ${p.icmp.quoted.sport}>${p.icmp.quoted.dport}` : ""}` : "";
    const k = `${p.ether} ${p.proto ?? ""} ${p.src ?? ""}:${p.sport ?? ""} > ${p.dst ?? ""}:${p.dport ?? ""}${icmp}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}


describe("netns cluster harness: a 3-node swarm over wireguard-go", { skip, timeout: 240_000 }, () => {
  let cluster: NetnsCluster;
  let capture: Capture;
  let packets: CapturedPacket[] = [];
  const image = "hmc-busybox:1";

  before(async () => {
    const t0 = Date.now();
    const mark = (what: string): void => console.log(`# ${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    cluster = await NetnsCluster.create({ nodes });
    capture = await cluster.startCapture({ maxSeconds: 200 });
    mark("namespaces and capture");
    const confs = meshConfigs();
    // Every interface up and listening first; traffic only afterwards.
    for (const n of nodes) await cluster.node(n.name).wireguardUp(confs.get(n.name)!);
    mark("wireguard up");
    await cluster.startEngines();
    mark("engines up");
    await cluster.importTestImage(image);
    mark("image imported");
  });

  after(() => {
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  test("each node has its own hostname, engine ID and wg0", async () => {
    const ids = new Set<string>();
    for (const n of nodes) {
      const node = cluster.node(n.name);
      const info = (await node.mustDocker(["info", "--format", "{{.ID}} {{.Name}} {{.Driver}}"])).split(" ");
      assert.equal(info[1], n.name);
      assert.equal(info[2], "vfs");
      ids.add(info[0]);
      const r = await node.exec(["ip", "-o", "-4", "addr", "show", "dev", "wg0"]);
      assert.match(r.stdout, new RegExp(`inet ${n.mesh.replace(/\./g, "\\.")}/24`));
    }
    assert.equal(ids.size, nodes.length, "every engine has its own ID");
  });

  test("what a script writes to /etc or /var stays on its node; the host's files are visible", async () => {
    const probe = `/etc/systemd/system/${cluster.prefix}.d/probe.conf`;
    const r = await cluster.node("n1").runScript(`set -eu\nmkdir -p "$(dirname ${probe})" /var/lib/${cluster.prefix}\necho n1 > ${probe}\necho n1 > /var/lib/${cluster.prefix}/probe\ncat ${probe} /etc/os-release >/dev/null\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await cluster.node("n1").exec(["cat", probe])).stdout, "n1\n");
    assert.equal(existsSync(probe), false, "not on the host");
    assert.equal(existsSync(`/var/lib/${cluster.prefix}`), false, "not on the host");
    assert.notEqual((await cluster.node("n2").exec(["cat", probe])).code, 0, "not on another node");
  });

  test("the mesh carries traffic between every pair (every peer has a handshake)", async () => {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const r = await cluster.node(a.name).exec(["busybox", "ping", "-c", "1", "-W", "3", b.mesh], { timeoutMs: 10_000 });
        assert.equal(r.code, 0, `${a.name} -> ${b.name} over wg0: ${r.stdout}${r.stderr}`);
      }
      const hs = await cluster.node(a.name).handshakes("wg0");
      assert.equal(hs.size, nodes.length - 1);
      for (const [peer, t] of hs) assert.ok(t > 0, `${a.name}: no handshake with ${peer}`);
    }
  });

  test("swarm formed over wg0: every node Ready, three managers", async () => {
    const [first, ...rest] = nodes.map((n) => ({ n, node: cluster.node(n.name) }));
    await first.node.mustDocker([
      "swarm", "init",
      "--advertise-addr", first.n.mesh,
      "--listen-addr", `${first.n.mesh}:2377`,
      "--data-path-addr", first.n.mesh,
      "--default-addr-pool", "10.128.0.0/16",
    ]);
    const token = await first.node.mustDocker(["swarm", "join-token", "-q", "manager"]);
    for (const { n, node } of rest) {
      await node.mustDocker(
        ["swarm", "join", "--token", token, "--advertise-addr", n.mesh, "--listen-addr", `${n.mesh}:2377`, "--data-path-addr", n.mesh, `${first.n.mesh}:2377`],
        { timeoutMs: 90_000 },
      );
    }
    const table = await eventually("every node Ready", 60_000, async () => {
      const out = await first.node.mustDocker(["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
      const rows = out.split("\n").map((l) => l.split(" "));
      return rows.length === nodes.length && rows.every((r) => r[1] === "Ready" && r[2] !== "") ? rows : undefined;
    });
    assert.deepEqual(table.map((r) => r[0]).sort(), nodes.map((n) => n.name));
    const addrs = await first.node.mustDocker(["node", "inspect", "--format", "{{.Status.Addr}}", ...nodes.map((n) => n.name)]);
    assert.deepEqual(addrs.split("\n").sort(), nodes.map((n) => n.mesh), "every node is known by its wg0 address");
  });

  test("a task on n1 reaches a task on n3 over an overlay with MTU option 1420", async () => {
    const mgr = cluster.node("n1");
    await mgr.mustDocker(["network", "create", "--driver", "overlay", "--opt", "com.docker.network.driver.mtu=1420", "probe"]);
    const serve = "mkdir -p /www && echo served-by-$(hostname) > /www/id && yes hmc-payload | head -c 300000 > /www/big && exec httpd -f -p 8080 -h /www";
    const common = ["service", "create", "--detach", "--no-resolve-image", "--network", "probe", "--endpoint-mode", "dnsrr"];
    await mgr.mustDocker([...common, "--name", "srv", "--hostname", "srv-task", "--constraint", "node.hostname==n1", image, "sh", "-c", serve]);
    await mgr.mustDocker([...common, "--name", "cli", "--constraint", "node.hostname==n3", image, "sleep", "300"]);

    const n3 = cluster.node("n3");
    const cid = await eventually("the cli task runs on n3", 90_000, async () => {
      const id = await n3.mustDocker(["ps", "-q", "--filter", "label=com.docker.swarm.service.name=cli"]);
      return id || undefined;
    });
    const onN1 = await cluster.node("n1").mustDocker(["ps", "-q", "--filter", "label=com.docker.swarm.service.name=srv"]);
    assert.ok(onN1, "the srv task runs on n1");

    const id = await eventually("cli reaches srv", 60_000, async () => {
      const r = await n3.docker(["exec", cid, "wget", "-q", "-O", "-", "http://srv:8080/id"], { timeoutMs: 10_000 });
      return r.code === 0 ? r.stdout.trim() : undefined;
    });
    assert.equal(id, "served-by-srv-task");
    // Full-size segments cross the overlay inside the mesh: 300 kB arrive whole.
    const big = await n3.docker(["exec", cid, "sh", "-c", "wget -q -O - http://srv:8080/big | wc -c"], { timeoutMs: 20_000 });
    assert.equal(big.stdout.trim(), "300000", big.stderr);
    // Docker's mtu option is the underlay value: the task's overlay interface gets 1420 - 50 (VXLAN).
    const subnet = await mgr.mustDocker(["network", "inspect", "probe", "--format", "{{(index .IPAM.Config 0).Subnet}}"]);
    const prefix = subnet.split(".").slice(0, 3).join(".") + ".";
    const links = await n3.mustDocker(["exec", cid, "sh", "-c", "for i in /sys/class/net/eth*; do echo $(basename $i) $(cat $i/mtu) $(ip -o -4 addr show dev $(basename $i) | awk '{print $4}'); done"]);
    const overlayIf = links.split("\n").map((l) => l.split(" ")).find((f) => f[2]?.startsWith(prefix));
    assert.ok(overlayIf, `no interface in ${subnet}: ${links}`);
    assert.equal(overlayIf[1], "1370");
  });

  test("the bridge saw only WireGuard between the nodes' VPC addresses", async () => {
    packets = await capture.stop();
    const vpc = new Set(nodes.map(vpcIp));
    const betweenNodes = (p: CapturedPacket): boolean => p.ether === "ipv4" && vpc.has(p.src!) && vpc.has(p.dst!);
    const wgPackets = packets.filter((p) => betweenNodes(p) && p.proto === "udp" && p.sport === WG_PORT && p.dport === WG_PORT);
    // Allowed besides: link-level chatter that carries no data (ARP; IGMP reports of an interface coming up),
    // and "port unreachable" for a WireGuard packet that reached a peer whose interface was not up yet.
    const harmless = (p: CapturedPacket): boolean =>
      p.ether === "arp" ||
      (p.proto === "igmp" && p.dst === "224.0.0.22") ||
      (betweenNodes(p) && p.icmp?.type === 3 && p.icmp.code === 3 && p.icmp.quoted?.proto === 17 && p.icmp.quoted.sport === WG_PORT && p.icmp.quoted.dport === WG_PORT);
    const other = packets.filter((p) => !wgPackets.includes(p) && !harmless(p));
    assert.deepEqual(summarize(other), {}, `${other.length} packets that are not WireGuard`);
    const clear = packets.filter((p) => [2377, 7946, 4789].includes(p.sport ?? 0) || [2377, 7946, 4789].includes(p.dport ?? 0));
    assert.equal(clear.length, 0);
    // The capture did see the cluster: handshakes, raft, gossip and 300 kB of payload all went by it.
    assert.ok(wgPackets.length > 300, `only ${wgPackets.length} WireGuard packets captured`);
    assert.ok(wgPackets.some((p) => p.length > 1400), "full-size WireGuard packets carried the payload");
  });

  test("the static-busybox check tells a static binary from a dynamic one", () => {
    assert.equal(hasInterpreter(readFileSync(execFileSync("sh", ["-c", "command -v busybox"], { encoding: "utf8" }).trim())), false);
    assert.equal(hasInterpreter(readFileSync("/bin/sh")), true);
  });

  test("parsePcap reads what tcpdump writes", () => {
    // A hand-made one-packet file: pcap header, record header, Ethernet + IPv4 + UDP.
    const g = Buffer.alloc(24);
    g.writeUInt32LE(0xa1b2c3d4, 0);
    g.writeUInt16LE(2, 4);
    g.writeUInt16LE(4, 6);
    g.writeUInt32LE(128, 16);
    g.writeUInt32LE(1, 20);
    const frame = Buffer.alloc(14 + 20 + 8);
    frame.writeUInt16BE(0x0800, 12);
    frame[14] = 0x45;
    frame[14 + 9] = 17;
    Buffer.from([10, 110, 0, 11, 10, 110, 0, 12]).copy(frame, 14 + 12);
    frame.writeUInt16BE(51820, 34);
    frame.writeUInt16BE(7946, 36);
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    assert.deepEqual(parsePcap(Buffer.concat([g, rec, frame])), [
      { ether: "ipv4", proto: "udp", src: "10.110.0.11", dst: "10.110.0.12", sport: 51820, dport: 7946, length: 42 },
    ]);
  });
});

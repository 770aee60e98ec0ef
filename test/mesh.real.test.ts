import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { clusterSkipReason, NetnsCluster, run, type Capture, type CapturedPacket, type ClusterNode } from "./support/netnsCluster";
import { joinStdin, meshArtifacts, printed, type MeshNodeArtifacts } from "./support/meshPlan";
import { planToDisk, type PlanOnDisk } from "./support/plan";
import { ofType, type Inputs } from "./support/planned";
import { eventually } from "./support/realTool";

// The prod plan's own artefacts on real engines: one network namespace per planned node with the VPC
// address the plan gave it, WireGuard from each node's rendered wg0.conf (unchanged, through the real
// wg-quick and wireguard-go), one Debian dockerd per node, and the rendered swarm init/join/label scripts
// run as the program runs them (`sh -s`, the script on stdin, root, the local engine; a join gets the token
// line its command reads from the first manager, then the script). Traffic stays on a bridge inside a
// namespace the harness creates.

const skip = clusterSkipReason();
const ROLE_LABEL = "hardened-matrix.role.";

/** The program runs every script as `sh -s` with the script on stdin (test/support/meshPlan.ts). */
function runAsProgram(node: ClusterNode, script: string, timeoutMs = 90_000) {
  return node.exec(["sh", "-s"], { stdin: script, timeoutMs });
}

/**
 * The token a node's join command reads: its planned `tokenFetch` run on the first manager as the program's
 * ssh runs it (root, the local engine, no stdin), captured the way `$(...)` captures it (trailing newlines cut).
 */
async function fetchToken(mgr: ClusterNode, n: MeshNodeArtifacts): Promise<string> {
  const r = await mgr.exec(n.tokenFetch!, { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `${n.tokenFetch!.join(" ")} on ${mgr.name}: ${r.stderr}`);
  return r.stdout.replace(/\n+$/, "");
}

async function mustRun(node: ClusterNode, script: string, keys: string[], what: string): Promise<Record<string, string>> {
  const r = await runAsProgram(node, script);
  assert.equal(r.code, 0, `${what} on ${node.name} exited ${r.code ?? r.signal}:\n${r.stderr}`);
  return printed(r.stdout, keys);
}

/** A copy of `conf` with one byte of the PresharedKey of the peer `peerPublicKey` changed. */
function withOneWrongPskByte(conf: string, peerPublicKey: string): string {
  const sections = conf.split(/(?=^\[Peer\]$)/m);
  const i = sections.findIndex((s) => s.includes(`PublicKey = ${peerPublicKey}\n`));
  assert.ok(i > 0, "the peer is in the file");
  const out = sections.slice();
  out[i] = out[i]!.replace(/^PresharedKey = (\S+)$/m, (_, b64: string) => {
    const k = Buffer.from(b64, "base64");
    k[7]! ^= 0x01;
    return `PresharedKey = ${k.toString("base64")}`;
  });
  const changed = conf.split("\n").filter((l, n) => out.join("").split("\n")[n] !== l);
  assert.equal(changed.length, 1, "exactly one line differs");
  return out.join("");
}

/** The wg0 apply script with `conf` embedded instead of the planned file. */
function withConf(applyScript: string, planned: string, conf: string): string {
  assert.ok(applyScript.includes(planned), "the apply script embeds the planned file");
  return applyScript.split(planned).join(conf);
}

const hash = (secret: string): string => `sha256:${createHash("sha256").update(secret).digest("hex").slice(0, 12)}`;

/** What wg0 is on a node, without the parts that move on their own (handshake times, byte counts). */
async function wgState(node: ClusterNode): Promise<string> {
  const dump = await node.exec(["wg", "show", "wg0", "dump"], { timeoutMs: 10_000 });
  assert.equal(dump.code, 0, dump.stderr);
  const peers = dump.stdout.trim().split("\n").map((l) => l.split("\t"));
  const link = await node.exec(["ip", "-o", "link", "show", "dev", "wg0"], { timeoutMs: 10_000 });
  const routes = await node.exec(["ip", "-4", "route", "show", "dev", "wg0"], { timeoutMs: 10_000 });
  const addr = await node.exec(["ip", "-o", "-4", "addr", "show", "dev", "wg0"], { timeoutMs: 10_000 });
  return [
    // interface: private key, public key, port, fwmark; peers: public key, psk, endpoint, allowed ips, keepalive
    // (secrets by a short hash: a failure message must not show them)
    // (peers sorted: wireguard-go lists them in Go map order, which varies from call to call)
    [hash(peers[0]![0]!), ...peers[0]!.slice(1, 4)].join(" "),
    ...peers.slice(1).map((f) => [f[0], hash(f[1]!), f[2], f[3], f[7]].join(" ")).sort(),
    link.stdout.replace(/\s+link\/.*$/s, "").trim(), // ifindex, flags, mtu: a restart would change the index
    routes.stdout.trim(),
    addr.stdout.replace(/valid_lft.*$/s, "").trim(),
  ].join("\n");
}

/** `docker network create` arguments for a planned docker.Network: every planned input used, none ignored. */
function networkCreateArgs(inputs: Inputs): string[] {
  const args = ["network", "create"];
  for (const [k, v] of Object.entries(inputs)) {
    switch (k) {
      case "name":
        break;
      case "driver":
        args.push("--driver", String(v));
        break;
      case "internal":
        if (v) args.push("--internal");
        break;
      case "attachable":
        if (v) args.push("--attachable");
        break;
      case "options":
        for (const [o, ov] of Object.entries(v as Record<string, string>)) args.push("--opt", `${o}=${ov}`);
        break;
      case "labels":
        for (const l of v as Array<{ label: string; value: string }>) args.push("--label", `${l.label}=${l.value}`);
        break;
      default:
        assert.fail(`planned network input ${k} has no CLI equivalent here: extend networkCreateArgs`);
    }
  }
  return [...args, String(inputs.name)];
}

/** Everything the scripts own about the swarm's nodes, to compare before and after a second run. */
async function swarmState(mgr: ClusterNode): Promise<string> {
  const ids = (await mgr.mustDocker(["node", "ls", "-q"])).split("\n").sort();
  return mgr.mustDocker([
    "node", "inspect", "--format",
    "{{.ID}} {{.Description.Hostname}} {{.Spec.Role}} {{.Spec.Availability}} {{.Status.State}} {{.Status.Addr}} {{json .Spec.Labels}}",
    ...ids,
  ]);
}


/**
 * Runs a node's planned teardown program (its `delete`) as pulumi-command runs it on the deployer
 * (/bin/sh -c), with `ssh` a stand-in that maps each planned VPN address to that node's namespaces
 * (the command after `root@<address>` runs there under sh -c, as sshd runs it). An address of no
 * live node exits 255, as ssh does for a host it cannot reach.
 */
async function runTeardown(cluster: NetnsCluster, nodes: MeshNodeArtifacts[], n: MeshNodeArtifacts) {
  assert.ok(n.teardown, `the plan has a teardown for ${n.name}`);
  const bin = path.join(cluster.dir, "deployer-bin");
  mkdirSync(bin, { recursive: true });
  const cases = nodes
    .map((a) => {
      const node = cluster.node(a.name);
      if (!node.holderPid) return `  ${a.tailnetAddress}) exit 255 ;;`;
      const env = Object.entries(node.env()).map(([k, v]) => `'${k}=${v}'`).join(" ");
      return `  ${a.tailnetAddress}) exec ${cluster.tools.nsenter} ${node.enter().join(" ")} env -i ${env} sh -c "$*" ;;`;
    })
    .join("\n");
  writeFileSync(
    path.join(bin, "ssh"),
    `#!/bin/sh
while [ $# -gt 0 ]; do
  case $1 in
    -o) shift 2 ;;
    -n) exec </dev/null; shift ;;
    root@*) host=\${1#root@}; shift; break ;;
    *) echo "ssh stand-in: unexpected $1" >&2; exit 2 ;;
  esac
done
case $host in
${cases}
  *) exit 255 ;;
esac
`,
    { mode: 0o755 },
  );
  return run("/bin/sh", ["-c", n.teardown], { env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin` }, timeoutMs: 240_000 });
}

describe("prod plan: the rendered mesh and swarm scripts on real engines", { skip, timeout: 540_000 }, () => {
  let plan: PlanOnDisk;
  let nodes: MeshNodeArtifacts[];
  let cluster: NetnsCluster;
  let capture: Capture;
  let first: MeshNodeArtifacts;
  let last: MeshNodeArtifacts;
  let wgPort: number;
  const nodeIds = new Map<string, string>();
  const image = "hmc-busybox:1";
  /** The stdin the program's join command sends node n: the token it reads from the first manager, then the script. */
  const joinInput = async (n: MeshNodeArtifacts): Promise<string> => joinStdin(await fetchToken(cluster.node(first.name), n), n.scripts.join!);

  before(async () => {
    plan = planToDisk("prod");
    nodes = meshArtifacts(plan);
    assert.ok(nodes.length >= 3, "prod plans at least three nodes");
    first = nodes[0]!;
    last = nodes[nodes.length - 1]!;
    wgPort = Number(/^ListenPort = (\d+)$/m.exec(first.wgConf)![1]);
    // The plan's VPC addresses come from the mock runtime (10.110.0.x): one /24 holds them all.
    cluster = await NetnsCluster.create({ nodes: nodes.map((n) => ({ name: n.name, vpcAddress: `${n.vpcAddress}/24` })) });
    capture = await cluster.startCapture({ maxSeconds: 280 });
  });

  after(() => {
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  test("a node whose wg0.conf copy has one byte of one pair's PSK changed cannot reach that peer, nor join through it", async () => {
    const wrong = withOneWrongPskByte(last.wgConf, first.publicKey);
    for (const n of nodes) {
      const script = n === last ? withConf(n.scripts.wgApply, n.wgConf, wrong) : n.scripts.wgApply;
      assert.deepEqual(await mustRun(cluster.node(n.name), script, ["changed"], "wg0 apply"), { changed: "1" });
    }
    await cluster.startEngines();
    const mgr = cluster.node(first.name);
    const initRun = await runAsProgram(mgr, first.scripts.init!);
    assert.equal(initRun.code, 0, initRun.stderr);
    const init = printed(initRun.stdout, ["node-id"]);
    assert.deepEqual(Object.keys(init), ["node-id"], "the init prints its node id only");
    const token = await fetchToken(mgr, last);
    assert.match(token, /^SWMTKN-1-[0-9a-z]+-[0-9a-z]+$/, "the shape the join script accepts");
    assert.ok(!initRun.stdout.includes(token) && !initRun.stderr.includes(token), "no token in what the init printed");
    nodeIds.set(first.name, init["node-id"]!);
    for (const n of nodes.slice(1, -1)) {
      const j = await mustRun(cluster.node(n.name), await joinInput(n), ["node-id"], "join");
      nodeIds.set(n.name, j["node-id"]!);
    }

    const bad = cluster.node(last.name);
    const ping = await bad.exec(["busybox", "ping", "-c", "2", "-W", "2", first.meshAddress], { timeoutMs: 10_000 });
    assert.notEqual(ping.code, 0, "no packet crosses the pair with the wrong PSK");
    assert.equal((await bad.handshakes("wg0")).get(first.publicKey), 0, `${last.name} has no session with ${first.name}`);
    assert.equal((await mgr.handshakes("wg0")).get(last.publicKey), 0, `${first.name} has no session with ${last.name}`);
    const back = await mgr.exec(["busybox", "ping", "-c", "2", "-W", "2", last.meshAddress], { timeoutMs: 10_000 });
    assert.notEqual(back.code, 0, "nor the other way");

    const join = await runAsProgram(bad, await joinInput(last));
    console.log(`# join over the wrong PSK: exit ${join.code}; stderr: ${join.stderr.trim()}`);
    assert.notEqual(join.code, 0, "the join script fails");
    const members = await mgr.mustDocker(["node", "ls", "--format", "{{.Hostname}}"]);
    assert.ok(!members.split("\n").includes(last.name), `${last.name} is not a member: ${members}`);

    // Only that pair is cut: the other peers' keys are right (one PSK per pair).
    for (const other of nodes.slice(1, -1)) {
      const r = await bad.exec(["busybox", "ping", "-c", "1", "-W", "3", other.meshAddress], { timeoutMs: 10_000 });
      assert.equal(r.code, 0, `${last.name} still reaches ${other.name}: ${r.stdout}`);
    }
  });

  test("the node rebuilt with its rendered wg0.conf joins; the label script labels every node by role", async () => {
    // The failed join keeps retrying in the background: the node is replaced, as a droplet would be.
    const fresh = await cluster.replaceNode(last.name);
    assert.deepEqual(await mustRun(fresh, last.scripts.wgApply, ["changed"], "wg0 apply"), { changed: "1" });
    await fresh.startEngine();
    const j = await mustRun(fresh, await joinInput(last), ["node-id"], "join");
    nodeIds.set(last.name, j["node-id"]!);

    const mgr = cluster.node(first.name);
    await eventually("every node Ready", 60_000, async () => {
      const rows = (await mgr.mustDocker(["node", "ls", "--format", "{{.Hostname}} {{.Status}}"])).split("\n");
      return rows.length === nodes.length && rows.every((r) => r.endsWith(" Ready")) ? rows : undefined;
    });
    const labels = await mustRun(mgr, first.scripts.label!, ["labelled", "removed"], "label");
    assert.deepEqual(labels, { labelled: String(nodes.length), removed: "0" });

    for (const n of nodes) {
      const out = await mgr.mustDocker(["node", "inspect", "--format", "{{.ID}}|{{.Description.Hostname}}|{{.Status.State}}|{{.Status.Addr}}|{{.Spec.Role}}|{{json .Spec.Labels}}", n.name]);
      const [id, host, state, addr, role, json] = out.split("|");
      assert.equal(id, nodeIds.get(n.name), `${n.name}: the node id the script printed`);
      assert.equal(host, n.name);
      assert.equal(state, "ready");
      assert.equal(addr, n.meshAddress, `${n.name} is known by its mesh address`);
      assert.equal(role, n.roles.includes("manager") ? "manager" : "worker");
      const roleLabels = Object.entries(JSON.parse(json!) as Record<string, string>).filter(([k]) => k.startsWith(ROLE_LABEL));
      assert.deepEqual(roleLabels.sort(), n.roles.map((r) => [`${ROLE_LABEL}${r}`, "true"]).sort(), `${n.name}'s role labels`);
    }
  });

  test("a task on the first node reaches a task on the last over the planned overlay (MTU option 1420)", async () => {
    const mgr = cluster.node(first.name);
    await cluster.importTestImage(image);
    const networks = ofType(plan, "docker:index/network:Network");
    assert.ok(networks.length > 0);
    for (const n of networks) await mgr.mustDocker(networkCreateArgs(n.inputs as Inputs));
    const db = networks.find((n) => (n.inputs as Inputs).name === "db");
    assert.ok(db, "the plan has the db overlay");
    assert.equal((db.inputs as Inputs).options["com.docker.network.driver.mtu"], "1420");

    const serve = "mkdir -p /www && echo served-by-$(hostname) > /www/id && yes hmc-payload | head -c 300000 > /www/big && exec httpd -f -p 8080 -h /www";
    // No IPVS in this kernel: dnsrr instead of a virtual IP (FACTS.md).
    const common = ["service", "create", "--detach", "--no-resolve-image", "--network", "db", "--endpoint-mode", "dnsrr"];
    await mgr.mustDocker([...common, "--name", "probe-srv", "--hostname", "probe-srv-task", "--constraint", `node.hostname==${first.name}`, image, "sh", "-c", serve]);
    await mgr.mustDocker([...common, "--name", "probe-cli", "--constraint", `node.hostname==${last.name}`, image, "sleep", "300"]);
    const far = cluster.node(last.name);
    const cid = await eventually("the client task runs on the last node", 90_000, async () => {
      const id = await far.mustDocker(["ps", "-q", "--filter", "label=com.docker.swarm.service.name=probe-cli"]);
      return id || undefined;
    });
    const id = await eventually("client reaches server", 60_000, async () => {
      // busybox 1.35's wget crashes with -T: the harness bounds the call instead.
      const r = await far.docker(["exec", cid, "wget", "-q", "-O", "-", "http://probe-srv:8080/id"], { timeoutMs: 10_000 });
      return r.code === 0 ? r.stdout.trim() : undefined;
    });
    assert.equal(id, "served-by-probe-srv-task");
    const big = await far.docker(["exec", cid, "sh", "-c", "wget -q -O - http://probe-srv:8080/big | wc -c"], { timeoutMs: 20_000 });
    assert.equal(big.stdout.trim(), "300000", big.stderr);
    const subnet = await mgr.mustDocker(["network", "inspect", "db", "--format", "{{(index .IPAM.Config 0).Subnet}}"]);
    const prefix = subnet.split(".").slice(0, 3).join(".") + ".";
    const links = await far.mustDocker(["exec", cid, "sh", "-c", "for i in /sys/class/net/eth*; do echo $(basename $i) $(cat $i/mtu) $(ip -o -4 addr show dev $(basename $i) | awk '{print $4}'); done"]);
    const overlayIf = links.split("\n").map((l) => l.split(" ")).find((f) => f[2]?.startsWith(prefix));
    assert.ok(overlayIf, `no interface in ${subnet}: ${links}`);
    assert.equal(overlayIf[1], "1370", "1420 minus VXLAN's 50 inside the task");
  });

  test("running every script a second time changes nothing", async () => {
    const mgr = cluster.node(first.name);
    const wgBefore = await Promise.all(nodes.map((n) => wgState(cluster.node(n.name))));
    for (const n of nodes) assert.deepEqual(await mustRun(cluster.node(n.name), n.scripts.wgApply, ["changed"], "wg0 apply again"), { changed: "0" });
    const wgAfter = await Promise.all(nodes.map((n) => wgState(cluster.node(n.name))));
    nodes.forEach((n, i) => assert.equal(wgAfter[i], wgBefore[i], `${n.name}: wg0 untouched`));
    const before = await swarmState(mgr);
    const init = await mustRun(mgr, first.scripts.init!, ["node-id"], "init again");
    assert.deepEqual(init, { "node-id": nodeIds.get(first.name) });
    for (const n of nodes.slice(1)) {
      const j = await mustRun(cluster.node(n.name), await joinInput(n), ["node-id"], "join again");
      assert.equal(j["node-id"], nodeIds.get(n.name));
    }
    assert.deepEqual(await mustRun(mgr, first.scripts.label!, ["labelled", "removed"], "label again"), { labelled: "0", removed: "0" });
    assert.equal(await swarmState(mgr), before);
  });

  test("a changed peer key is applied in place (wg syncconf, no restart) and changed back", async () => {
    const node = cluster.node(first.name);
    const original = await wgState(node);
    const changedConf = withOneWrongPskByte(first.wgConf, last.publicKey);
    assert.deepEqual(await mustRun(node, withConf(first.scripts.wgApply, first.wgConf, changedConf), ["changed"], "wg0 apply (one PSK changed)"), { changed: "1" });
    const during = await wgState(node);
    assert.notEqual(during, original, "the new PSK is in the running interface");
    const index = (s: string): string => s.split("\n").find((l) => /^\d+: wg0/.test(l))!;
    assert.equal(index(during), index(original), "same interface: not restarted");
    assert.deepEqual(await mustRun(node, first.scripts.wgApply, ["changed"], "wg0 apply (back)"), { changed: "1" });
    assert.equal(await wgState(node), original);
    const r = await node.exec(["busybox", "ping", "-c", "1", "-W", "3", last.meshAddress], { timeoutMs: 10_000 });
    assert.equal(r.code, 0, `the pair works again: ${r.stdout}`);
  });

  test("a manager's engine started before wg0 stays out of the swarm until restarted after it: why docker.service waits for wg-quick@wg0", async () => {
    const x = cluster.node(last.name);
    const mgr = cluster.node(first.name);
    // The apply script ordered docker after wg0 on the node (inside the node's own /etc).
    const dropIn = await x.exec(["sh", "-c", "grep -l '^After=wg-quick@wg0.service$' /etc/systemd/system/docker.service.d/*.conf"]);
    assert.equal(dropIn.code, 0, "a docker.service drop-in orders it after wg-quick@wg0");
    assert.ok(last.roles.includes("manager"), "the last prod node is a manager");

    // A boot in the wrong order: the engine restores its swarm while wg0 (and so the mesh address) is absent.
    await x.stopEngine();
    await x.exec(["systemctl", "stop", "wg-quick@wg0.service"]);
    await x.startEngine();
    const state = "{{.Swarm.LocalNodeState}} {{.Swarm.Error}}";
    const failed = await eventually("the engine reports its swarm error", 30_000, async () => {
      const s = await x.mustDocker(["info", "--format", state]);
      return s.startsWith("error ") ? s : undefined;
    });
    console.log(`# engine before wg0: ${failed}`);
    assert.match(failed, new RegExp(`listen tcp ${last.meshAddress.replace(/\./g, "\\.")}:2377: bind: cannot assign requested address`));
    // wg0 coming up later does not bring it back.
    await x.exec(["systemctl", "start", "wg-quick@wg0.service"]);
    await new Promise((r) => setTimeout(r, 15_000));
    assert.match(await x.mustDocker(["info", "--format", state]), /^error /, "still out of the swarm with wg0 up");
    // In the right order it rejoins by itself.
    await x.stopEngine();
    await x.startEngine();
    await eventually(`${last.name} Ready again`, 60_000, async () => {
      const row = await mgr.mustDocker(["node", "ls", "--filter", `name=${last.name}`, "--format", "{{.Status}} {{.ManagerStatus}}"]);
      return row === "Ready Reachable" ? row : undefined;
    });
  });

  test("replacing the db node in the engine's order: its planned teardown drains it, takes it out of Raft and unmounts its volumes; then the new machine with the same name, mesh address and key joins", async () => {
    const mgr = cluster.node(first.name);
    const db = nodes.find((n) => n.roles.includes("db"))!;
    assert.ok(db !== first && db.roles.includes("manager"), "prod's db node is a manager other than the first");
    const node = cluster.node(db.name);
    const mounts = [...db.teardown!.matchAll(/^for m in (\/mnt\/.*); do$/gm)].flatMap((m) => m[1]!.split(" "));
    assert.ok(mounts.length > 0, "the db node's teardown unmounts its volumes");
    // The volumes, as cloud-init mounts them (a tmpfs each here, inside the node's own mount namespace).
    const mnt = await node.exec(["sh", "-c", `set -e; mount -t tmpfs -o size=8m tmpfs /mnt; for m in ${mounts.join(" ")}; do mkdir -p $m; mount -t tmpfs -o size=8m tmpfs $m; done`]);
    assert.equal(mnt.code, 0, mnt.stderr);
    // A task pinned to the db node (the drain must stop it before anything is unmounted).
    await mgr.mustDocker(["service", "create", "--detach", "--no-resolve-image", "--name", "probe-writer", "--constraint", `node.hostname==${db.name}`, image, "sleep", "600"]);
    const ps = async () => mgr.mustDocker(["service", "ps", "--no-trunc", "probe-writer", "--format", "{{.Node}} {{.CurrentState}} {{.Error}}"]);
    try {
      await eventually("the writer runs on the db node", 90_000, async () => (await node.mustDocker(["ps", "-q", "--filter", "label=com.docker.swarm.service.name=probe-writer"])) || undefined);
    } catch (e) {
      throw new Error(`${String(e)}: ${await ps()}`);
    }
    const oldId = nodeIds.get(db.name)!;

    // 1. The teardown (deleted before the droplet: delete-before-replace).
    const t = await runTeardown(cluster, nodes, db);
    console.log(`# teardown of ${db.name}: exit ${t.code}\n${t.stdout}${t.stderr}`);
    assert.equal(t.code, 0, t.stderr);
    assert.deepEqual(printed(t.stdout, ["drained", "left", "removed"]), { drained: "1", left: "1", removed: "1" });
    const members = (await mgr.mustDocker(["node", "ls", "--format", "{{.ID}} {{.Hostname}} {{.ManagerStatus}}"])).split("\n");
    assert.ok(!members.some((m) => m.startsWith(`${oldId} `) || m.split(" ")[1] === db.name), `${db.name} is out of the swarm: ${members.join("; ")}`);
    assert.equal(await mgr.mustDocker(["info", "--format", "{{.Swarm.Managers}}"]), String(nodes.filter((n) => n.roles.includes("manager")).length - 1), "Raft lost the member");
    const still = await node.exec(["sh", "-c", `for m in ${mounts.join(" ")}; do mountpoint -q $m && echo $m; done; ip link show wg0 >/dev/null 2>&1 && echo wg0; true`]);
    assert.equal(still.stdout.trim(), "", "no volume mounted and no wg0 left on the old machine");
    assert.notEqual((await node.docker(["info"], { timeoutMs: 10_000 })).code, 0, "its engine is stopped");
    const tasks = await mgr.mustDocker(["service", "ps", "probe-writer", "--format", "{{.DesiredState}} {{.CurrentState}}"]);
    assert.ok(!/^Running Running/m.test(tasks), `the writer is not running anywhere: ${tasks}`);

    // 2. The droplet is deleted and created again (same name, VPC address, mesh address and key).
    const fresh = await cluster.replaceNode(db.name);
    assert.deepEqual(await mustRun(fresh, db.scripts.wgApply, ["changed"], "wg0 apply"), { changed: "1" });
    await fresh.startEngine();
    const j = await mustRun(fresh, await joinInput(db), ["node-id"], "join");
    nodeIds.set(db.name, j["node-id"]!);
    const rows = await eventually("every node Ready", 90_000, async () => {
      const r = (await mgr.mustDocker(["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"])).split("\n");
      return r.length === nodes.length && r.every((x) => / Ready (Leader|Reachable)$/.test(x) || (/ Ready$/.test(x))) ? r : undefined;
    });
    assert.equal(rows.filter((r) => r.startsWith(`${db.name} `)).length, 1, "one node of that name");
    assert.deepEqual(await mustRun(mgr, first.scripts.label!, ["labelled", "removed"], "label"), { labelled: "1", removed: "0" });
    assert.equal(await mgr.mustDocker(["info", "--format", "{{.Swarm.Managers}}"]), String(nodes.filter((n) => n.roles.includes("manager")).length));
    const labels = JSON.parse(await mgr.mustDocker(["node", "inspect", "--format", "{{json .Spec.Labels}}", db.name])) as Record<string, string>;
    assert.deepEqual(Object.keys(labels).filter((k) => k.startsWith(ROLE_LABEL)).sort(), db.roles.map((r) => `${ROLE_LABEL}${r}`).sort());
    await mgr.mustDocker(["service", "rm", "probe-writer"]);
  });

  test("a manager that leaves `nodes`: its teardown demotes and removes it, so Raft counts only the managers that stay", async () => {
    const mgr = cluster.node(first.name);
    const db = nodes.find((n) => n.roles.includes("db"))!;
    const t = await runTeardown(cluster, nodes, db);
    assert.equal(t.code, 0, t.stderr);
    assert.deepEqual(printed(t.stdout, ["drained", "left", "removed"]), { drained: "1", left: "1", removed: "1" });
    const rows = (await mgr.mustDocker(["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"])).split("\n");
    assert.deepEqual(rows.map((r) => r.split(" ")[0]).sort(), nodes.filter((n) => n !== db).map((n) => n.name).sort(), "the removed manager is gone from the membership");
    assert.ok(rows.every((r) => / Ready (Leader|Reachable)$/.test(r)), `every remaining manager is reachable: ${rows.join("; ")}`);
    assert.equal(await mgr.mustDocker(["info", "--format", "{{.Swarm.Managers}}"]), String(nodes.filter((n) => n.roles.includes("manager")).length - 1));
    // Its VPN address now answers nothing: a second run (e.g. a retried delete) treats it as dead and changes nothing.
    cluster.node(db.name).stop();
    const again = await runTeardown(cluster, nodes, db);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /does not answer ssh: treated as dead/);
    assert.deepEqual(printed(again.stdout, ["drained", "removed"]), { drained: "0", removed: "0" });
  });

  test("the bridge saw only WireGuard between the nodes' VPC addresses", async () => {
    const packets = await capture.stop();
    const vpc = new Set(nodes.map((n) => n.vpcAddress));
    const betweenNodes = (p: CapturedPacket): boolean => p.ether === "ipv4" && vpc.has(p.src!) && vpc.has(p.dst!);
    const wg = packets.filter((p) => betweenNodes(p) && p.proto === "udp" && p.sport === wgPort && p.dport === wgPort);
    // Besides: link-level chatter that carries no data (ARP; IGMP reports of an interface coming up), and
    // "port unreachable" for a WireGuard packet that reached a peer whose interface was not up yet.
    const harmless = (p: CapturedPacket): boolean =>
      p.ether === "arp" ||
      (p.proto === "igmp" && p.dst === "224.0.0.22") ||
      (betweenNodes(p) && p.icmp?.type === 3 && p.icmp.code === 3 && p.icmp.quoted?.proto === 17 && p.icmp.quoted.sport === wgPort && p.icmp.quoted.dport === wgPort);
    const other = packets.filter((p) => !wg.includes(p) && !harmless(p));
    const summary: Record<string, number> = {};
    for (const p of other) {
      const k = `${p.ether} ${p.proto ?? ""} ${p.src ?? ""}:${p.sport ?? ""} > ${p.dst ?? ""}:${p.dport ?? ""}${p.icmp ? ` icmp ${p.icmp.type}/${p.icmp.code}` : ""}`;
      summary[k] = (summary[k] ?? 0) + 1;
    }
    assert.deepEqual(summary, {}, `${other.length} packets that are not WireGuard`);
    assert.ok(wg.length > 300, `only ${wg.length} WireGuard packets: the capture missed the cluster`);
    assert.ok(wg.some((p) => p.length > 1400), "full-size WireGuard packets carried the payload");
  });
});

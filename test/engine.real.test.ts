/**
 * The real program through Pulumi's own engine (the CLI built by test/engine/build-engine.sh) over
 * the simulated providers: the engine judges what a change does (update, replace, protect), not our
 * own diff. One sandbox for the whole file: an `up` of prod into the simulated cloud, then previews
 * of changes against that state.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { builtEngine, REPO } from "./engine/harness";
import { readCloud, objectsOf, type CloudState } from "./engine/sim/cloud";

const engine = builtEngine();
// In CI the build step of .ci/run builds the engine: a missing engine there is a failure, not a skip.
if (!engine && process.env.CI) throw new Error("the Pulumi engine is not built: .ci/run runs test/engine/build-engine.sh before npm test");
const skip = engine ? false : "the Pulumi engine is not built here: run `npm run engine:build` (test/engine/build-engine.sh, minutes once)";

interface Run {
  status: number;
  out: string;
  summary?: Record<string, number>;
}

function run(dir: string, op: string, stack: string, ...args: string[]): Run {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(REPO, "test/engine/run.ts"), op, "--stack", stack, "--dir", dir, "--json", ...args], {
    cwd: REPO,
    encoding: "utf8",
    timeout: 15 * 60_000,
    env: { ...process.env, PULUMI_CONFIG_PASSPHRASE: undefined, PULUMI_BACKEND_URL: undefined, PULUMI_ACCESS_TOKEN: undefined },
  });
  const out = `${r.stdout}\n${r.stderr}`;
  const last = r.stdout.trim().split("\n").pop() ?? "";
  const summary = last.startsWith("{") ? (JSON.parse(last) as { summary: Record<string, number> }).summary : undefined;
  return { status: r.status ?? -1, out, summary };
}

interface Step {
  op: string;
  type: string;
  urn: string;
}

/** The engine's own step lines (`    +-digitalocean:index/droplet:Droplet: (replace)`), with the urn printed under each. */
function steps(out: string): Step[] {
  const lines = out.split("\n");
  const found: Step[] = [];
  lines.forEach((line, i) => {
    const m = /^\s*(?:\+-|[~+-])?\s*([a-z0-9-]+:[A-Za-z0-9/._-]*:[A-Za-z0-9]+): \(([a-z-]+)(?:\[[a-z]+\])?\)/.exec(line);
    if (!m) return;
    const urn = lines.slice(i + 1, i + 4).map((l) => /\[urn=([^\]]+)\]/.exec(l)?.[1]).find(Boolean) ?? "";
    found.push({ type: m[1]!, op: m[2]!, urn });
  });
  return found;
}

describe("the real engine over the simulated cloud (prod)", { skip }, () => {
  let dir: string;
  let cloud: CloudState;
  let upRun: Run;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "hm-engine-test-"));
    upRun = run(dir, "up", "prod");
    cloud = readCloud(path.join(dir, "cloud.json"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("`up` creates the whole stack in the simulated cloud", () => {
    assert.equal(upRun.status, 0, upRun.out.slice(-4000));
    assert.ok((upRun.summary?.create ?? 0) > 50, JSON.stringify(upRun.summary));
    const droplets = objectsOf(cloud, "digitalocean:index/droplet:Droplet");
    assert.deepEqual(droplets.map((d) => d.state.name).sort(), ["hm-prod-1", "hm-prod-2", "hm-prod-3"]);
    // Every volume attached to exactly one droplet; every node joined the tailnet with the key.
    for (const v of objectsOf(cloud, "digitalocean:index/volume:Volume")) assert.equal((v.state.dropletIds as string[]).length, 1, `${String(v.state.name)} attachments`);
    assert.deepEqual(cloud.devices.map((d) => d.hostname).sort(), ["hm-prod-1", "hm-prod-2", "hm-prod-3"]);
    // The swarm scripts were recorded (never run): init on one manager, a join on each other node.
    assert.equal(cloud.commands.filter((c) => c.urn.endsWith("-init") && c.op === "create").length, 1);
  });

  it("a second preview with no change is empty", () => {
    const r = run(dir, "preview", "prod");
    assert.equal(r.status, 0, r.out.slice(-4000));
    const changes = Object.entries(r.summary ?? {}).filter(([op, n]) => op !== "same" && n > 0);
    assert.deepEqual(changes, [], r.out.slice(-6000));
  });

  it("a change of region replaces droplets and volumes, and the engine refuses on protect", () => {
    const md = path.join(dir, "region.md");
    const r = run(dir, "preview", "prod", "--set", "region=ams3", "--markdown", md);
    assert.notEqual(r.status, 0, "the preview must fail: the volumes and the reserved IP are protected");
    const all = steps(r.out);
    const of = (type: string) => all.filter((s) => s.type === type);
    assert.deepEqual(of("digitalocean:index/droplet:Droplet").map((s) => s.op), ["replace", "replace", "replace"], r.out.slice(0, 6000));
    assert.deepEqual(of("digitalocean:index/volume:Volume").map((s) => s.op), ["replace", "replace", "replace"]);
    // The engine's own refusal, for each protected volume.
    for (const v of of("digitalocean:index/volume:Volume")) {
      assert.ok(r.out.includes(`unable to replace resource "${v.urn}"\nas it is currently marked for protection`), `no protect error for ${v.urn}`);
    }
    // The PR comment's markdown (run.ts --markdown), from the same preview's engine events: each
    // replaced volume with the replace key its provider gave (region), each droplet with the one the
    // engine gave for it (the VPC it sits in is replaced first), and the engine's refusal.
    const text = readFileSync(md, "utf8");
    const rows = text.split("\n").filter((l) => l.startsWith("| `"));
    const row = (name: string) => rows.find((l) => l.startsWith(`| \`${name}\` |`)) ?? `no row for ${name} in:\n${text.slice(0, 3000)}`;
    assert.match(text, /^\*\*The engine's summary:\*\* .*\b\d+ to replace\b/m);
    for (const v of of("digitalocean:index/volume:Volume")) assert.match(row(v.urn.split("::").pop()!), /`region`: "fra1" → "ams3"/);
    for (const d of of("digitalocean:index/droplet:Droplet")) assert.match(row(d.urn.split("::").pop()!), /`vpcUuid`: "[0-9a-f-]+" → \[unknown\]/);
    assert.equal(rows.filter((l) => / \| `digitalocean:index\/(volume:Volume|droplet:Droplet)` \| /.test(l)).length, 6);
    assert.match(text, /unable to replace resource "urn:[^"]+::hm-prod-postgres"\nas it is currently marked for protection/);
  });

  it("adding an SSH key replaces no droplet and changes nothing else (issue 15, defect 8)", () => {
    const keys = ["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa", "0a:1b:2c:3d:4e:5f:60:71:82:93:a4:b5:c6:d7:e8:f9"];
    const r = run(dir, "preview", "prod", "--set", `sshKeys=${JSON.stringify(keys)}`);
    assert.equal(r.status, 0, r.out.slice(-4000));
    const changed = steps(r.out).filter((s) => s.op !== "same");
    assert.deepEqual(changed, [], r.out.slice(0, 6000));
  });

  it("an added node shows only creates and the mesh updates: nothing stateful replaced, nothing deleted", () => {
    const nodes = [
      { name: "hm-prod-1", size: "s-1vcpu-2gb", roles: ["manager", "edge"] },
      { name: "hm-prod-2", size: "s-2vcpu-4gb", roles: ["manager", "db"] },
      { name: "hm-prod-3", size: "s-1vcpu-2gb", roles: ["manager", "turn"] },
      { name: "hm-prod-4", size: "s-1vcpu-2gb", roles: [] },
    ];
    const r = run(dir, "preview", "prod", "--set", `nodes=${JSON.stringify(nodes)}`);
    assert.equal(r.status, 0, r.out.slice(-4000));
    const s = r.summary ?? {};
    assert.equal(s.delete ?? 0, 0, JSON.stringify(s));
    // The mesh updates: each existing node's wg0 and the labels re-run (a command is re-run by
    // replacing it when its triggers change). Nothing else is replaced, above all no teardown
    // command, whose delete would drain and remove a node.
    const replaced = steps(r.out).filter((x) => x.op === "replace").map((x) => `${x.type}::${x.urn.split("::").pop()}`);
    assert.deepEqual(replaced.sort(), [
      "command:local:Command::cloud-mesh-hm-prod-1-wg0",
      "command:local:Command::cloud-mesh-hm-prod-2-wg0",
      "command:local:Command::cloud-mesh-hm-prod-3-wg0",
      "command:local:Command::cloud-swarm-labels",
    ]);
    const created = steps(r.out).filter((x) => x.op === "create");
    assert.ok(created.some((x) => x.type === "digitalocean:index/droplet:Droplet" && x.urn.endsWith("::hm-prod-4")), r.out.slice(0, 6000));
    // The new node's own join key is created with it (issue 15, defect 1).
    assert.ok(created.some((x) => x.type === "tailscale:index/tailnetKey:TailnetKey" && x.urn.includes("hm-prod-4")), r.out.slice(0, 6000));
  });

  it("a new Dendrite image updates one service in place and replaces nothing", () => {
    const r = run(dir, "preview", "prod", "--set", "images={dendrite: matrixdotorg/dendrite-monolith:v0.15.3}");
    assert.equal(r.status, 0, r.out.slice(-4000));
    const s = r.summary ?? {};
    assert.equal(s.update, 1, JSON.stringify(s));
    assert.equal(s.replace ?? 0, 0, JSON.stringify(s));
    assert.equal(s.create ?? 0, 0, JSON.stringify(s));
    assert.equal(s.delete ?? 0, 0, JSON.stringify(s));
    const changed = steps(r.out).filter((s) => s.op !== "same");
    assert.deepEqual(changed.map((s) => [s.type, s.op, s.urn.split("::").pop()]), [["docker:index/service:Service", "update", "dendrite-service"]]);
    assert.match(r.out, /~ image\s*: "matrixdotorg\/dendrite-monolith:v0\.15\.2" => "matrixdotorg\/dendrite-monolith:v0\.15\.3"/);
  });
});

/**
 * Day-2 drill, judged by the engine's real step order (README "Replacing a node"): `up --replace` of
 * hm-prod-2's generation (the db node, which carries the Postgres and Dendrite volumes). The
 * simulated cloud journals every provider operation with its `seq`, so the order asserted is the
 * order the engine ran the steps in, and the cloud refuses what DigitalOcean refuses (a volume
 * attached to a second droplet, a volume deleted while attached).
 */
describe("drill: replacing the db node hm-prod-2 through its generation", { skip }, () => {
  const DROPLET = "digitalocean:index/droplet:Droplet";
  const VOLUME = "digitalocean:index/volume:Volume";
  const ATTACHMENT = "digitalocean:index/volumeAttachment:VolumeAttachment";
  const KEY = "tailscale:index/tailnetKey:TailnetKey";
  const PROTECTED = [VOLUME, "digitalocean:index/reservedIp:ReservedIp", "digitalocean:index/vpc:Vpc"];
  let dir: string;
  let upRun: Run;
  let drill: Run;
  let before_: CloudState;
  let after_: CloudState;
  /** The journal entries of the drill's own `up`. */
  let ran: CloudState["journal"];
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "hm-engine-drill-"));
    upRun = run(dir, "up", "prod");
    before_ = readCloud(path.join(dir, "cloud.json"));
    const generation = Object.values(before_.objects).find((o) => o.type === "random:index/randomId:RandomId" && o.urn.endsWith("::hm-prod-2-generation"));
    drill = generation ? run(dir, "up", "prod", "--replace", generation.urn) : { status: -1, out: "no hm-prod-2-generation in the simulated cloud" };
    after_ = readCloud(path.join(dir, "cloud.json"));
    ran = after_.journal.slice(before_.journal.length);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const one = (op: string, type: string, name: string) => {
    const found = ran.filter((j) => j.op === op && j.type === type && j.name === name);
    assert.equal(found.length, 1, `${op} ${type} ${name}: ${JSON.stringify(found)}\n${ran.map((j) => `${j.seq} ${j.op} ${j.name}`).join("\n")}`);
    return found[0]!;
  };

  it("the `up --replace` of the generation succeeds and replaces only the node and what hangs on it", () => {
    assert.equal(upRun.status, 0, upRun.out.slice(-4000));
    assert.equal(drill.status, 0, drill.out.slice(-6000));
    assert.equal(drill.summary?.create ?? 0, 0, JSON.stringify(drill.summary));
    assert.equal(drill.summary?.delete ?? 0, 0, JSON.stringify(drill.summary));
    assert.ok((drill.summary?.replace ?? 0) > 0, JSON.stringify(drill.summary));
  });

  it("teardown deleted, then the node's volume attachments, then the droplet, then the new droplet created", () => {
    const oldDroplet = Object.values(before_.objects).find((o) => o.type === DROPLET && o.state.name === "hm-prod-2")!;
    const attachments = Object.values(before_.objects).filter((o) => o.type === ATTACHMENT && String(o.state.dropletId) === oldDroplet.id);
    const names = attachments.map((a) => a.urn.split("::").pop()!).sort();
    assert.deepEqual(names, ["hm-prod-dendrite-attachment", "hm-prod-postgres-attachment"]);

    const teardownDeleted = one("delete", "command:local:Command", "cloud-swarm-hm-prod-2-teardown");
    const dropletDeleted = one("delete", DROPLET, "hm-prod-2");
    const dropletCreated = one("create", DROPLET, "hm-prod-2");
    assert.equal(dropletDeleted.id, oldDroplet.id);
    for (const a of names) {
      const detached = one("delete", ATTACHMENT, a);
      assert.ok(teardownDeleted.seq < detached.seq, `the teardown (${teardownDeleted.seq}) runs before ${a} is deleted (${detached.seq})`);
      assert.ok(detached.seq < dropletDeleted.seq, `${a} is deleted (${detached.seq}) before the droplet (${dropletDeleted.seq})`);
      // The new attachment, to the new droplet, only once that exists.
      const attached = one("create", ATTACHMENT, a);
      assert.ok(dropletCreated.seq < attached.seq, `${a} is re-created (${attached.seq}) after the new droplet (${dropletCreated.seq})`);
    }
    assert.ok(dropletDeleted.seq < dropletCreated.seq, `the old droplet is deleted (${dropletDeleted.seq}) before the new one is created (${dropletCreated.seq})`);
    // The teardown actually ran its drain/leave program (recorded, never run), and a new one is armed after the attachments.
    assert.ok(after_.commands.some((c) => c.op === "delete" && c.urn.endsWith("::cloud-swarm-hm-prod-2-teardown") && c.command.length > 0));
    const rearmed = one("create", "command:local:Command", "cloud-swarm-hm-prod-2-teardown");
    for (const a of names) assert.ok(one("create", ATTACHMENT, a).seq < rearmed.seq, `the new teardown is armed after ${a}`);
  });

  it("the new droplet boots with a join key created in this run, and joins the tailnet with it", () => {
    const created = one("create", DROPLET, "hm-prod-2");
    const droplet = after_.objects[created.id]!;
    const newKey = ran.find((j) => j.op === "create" && j.type === KEY && j.name === "cloud-tailnet-hm-prod-2-key");
    assert.ok(newKey, "a new join key for hm-prod-2 is created in this run");
    assert.ok(newKey.seq < created.seq, "the key exists before the droplet boots");
    const key = String(after_.objects[newKey.id]!.state.key);
    assert.ok(String(droplet.state.userData).includes(key), "the new droplet's user data carries the new key");
    for (const old of objectsOf(before_, KEY)) assert.ok(!String(droplet.state.userData).includes(String(old.state.key)), `the new droplet carries no old key (${old.id})`);
    assert.equal(after_.objects[newKey.id]!.state.used, true, "the new node joined the tailnet with the new key");
    const devices = (c: CloudState) => c.devices.filter((d) => d.hostname === "hm-prod-2").length;
    assert.equal(devices(after_), devices(before_) + 1, "the new hm-prod-2 appears in the tailnet");
  });

  it("every volume ends on exactly one droplet, and no volume was ever on two", () => {
    for (const v of objectsOf(after_, VOLUME)) {
      const on = v.state.dropletIds as string[];
      assert.equal(on.length, 1, `${String(v.state.name)} attachments: ${JSON.stringify(on)}`);
      assert.ok(after_.objects[on[0]!]?.type === DROPLET, `${String(v.state.name)} is attached to a live droplet`);
    }
    const newDroplet = one("create", DROPLET, "hm-prod-2").id;
    for (const name of ["hm-prod-postgres", "hm-prod-dendrite"]) {
      const v = objectsOf(after_, VOLUME).find((o) => o.state.name === name)!;
      assert.deepEqual(v.state.dropletIds, [newDroplet], `${name} follows the node to its new droplet`);
    }
    // Replay the attachments through the journal: at no point two live attachments of one volume.
    const volumeOf = new Map<string, string>();
    for (const o of [...Object.values(before_.objects), ...Object.values(after_.objects)]) if (o.type === ATTACHMENT) volumeOf.set(o.id, String(o.state.volumeId));
    const live = new Map<string, Set<string>>();
    for (const o of objectsOf(before_, ATTACHMENT)) live.set(volumeOf.get(o.id)!, new Set([...(live.get(volumeOf.get(o.id)!) ?? []), o.id]));
    for (const j of ran.filter((x) => x.type === ATTACHMENT)) {
      const v = volumeOf.get(j.id)!;
      const set = live.get(v) ?? new Set<string>();
      if (j.op === "delete") set.delete(j.id);
      else set.add(j.id);
      live.set(v, set);
      assert.ok(set.size <= 1, `volume ${v} attached twice after seq ${j.seq}: ${[...set].join(", ")}`);
    }
  });

  it("nothing protected is touched and the other nodes' droplets are untouched", () => {
    const touched = ran.filter((j) => PROTECTED.includes(j.type));
    assert.deepEqual(touched, []);
    for (const type of PROTECTED) assert.deepEqual(objectsOf(after_, type).map((o) => o.id).sort(), objectsOf(before_, type).map((o) => o.id).sort(), type);
    assert.deepEqual(ran.filter((j) => j.type === DROPLET && j.name !== "hm-prod-2"), []);
    for (const name of ["hm-prod-1", "hm-prod-3"]) {
      const was = objectsOf(before_, DROPLET).find((d) => d.state.name === name)!;
      assert.deepEqual(after_.objects[was.id], was, `${name} is the same droplet, unchanged`);
    }
  });
});

/**
 * vpn: headscale under the engine. The program's Headscale resources are dynamic resources, run by
 * the SDK's own dynamic-provider host (the harness's `pulumi-resource-pulumi-nodejs`); what they dial
 * reaches the simulated cloud's network (sim/net.ts): port 80 of the control droplet serves what its
 * bootstrap script seals, and https://hs.example.org, found through the simulated DNS, is
 * test/support/fakeHeadscaleApi.ts behind a certificate of a simulated CA, one database per state
 * volume. Cluster droplets join it with the pre-auth key their user data carries.
 */
describe("the real engine over the simulated cloud (prod, vpn: headscale)", { skip }, () => {
  const DROPLET = "digitalocean:index/droplet:Droplet";
  const VOLUME = "digitalocean:index/volume:Volume";
  const ATTACHMENT = "digitalocean:index/volumeAttachment:VolumeAttachment";
  const nodes = [
    { name: "hm-prod-1", size: "s-1vcpu-2gb", roles: ["manager", "edge"] },
    { name: "hm-prod-2", size: "s-2vcpu-4gb", roles: ["manager", "db"] },
    { name: "hm-prod-3", size: "s-1vcpu-2gb", roles: ["manager", "turn"] },
    { name: "hm-prod-hs", size: "s-1vcpu-1gb", roles: ["headscale"] },
  ];
  const settings = ["--set", "vpn=headscale", "--set", `nodes=${JSON.stringify(nodes)}`];
  type Db = { users: Array<{ email: string }>; nodes: Array<{ id: string; name: string; tags: string[] }>; apiKeys: unknown[]; keys: Array<{ used: boolean; aclTags: string[] }> };
  type Hs = { dbs: Record<string, Db>; droplets: Record<string, { blob?: string; joined?: string }> };
  const headscale = (c: CloudState) => (c as CloudState & { headscale?: Hs }).headscale!;
  let dir: string;
  let upRun: Run;
  let second: Run;
  let replace: Run;
  let afterUp: CloudState;
  let afterReplace: CloudState;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "hm-engine-headscale-"));
    upRun = run(dir, "up", "prod", ...settings);
    afterUp = readCloud(path.join(dir, "cloud.json"));
    second = run(dir, "preview", "prod", ...settings);
    const node = Object.values(afterUp.objects).find((o) => o.urn.endsWith("::cloud-headscale-node"));
    replace = node ? run(dir, "up", "prod", ...settings, "--replace", node.urn) : { status: -1, out: "no cloud-headscale-node in the simulated cloud" };
    afterReplace = readCloud(path.join(dir, "cloud.json"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const control = (c: CloudState) => objectsOf(c, DROPLET).find((d) => d.state.name === "hm-prod-hs")!;
  const stateVolume = (c: CloudState) => objectsOf(c, VOLUME).find((v) => v.state.name === "hm-prod-headscale")!;

  it("`up` creates the control node, hands over its API key, and every cluster node joins Headscale", () => {
    assert.equal(upRun.status, 0, upRun.out.slice(-6000));
    const volume = stateVolume(afterUp);
    assert.deepEqual(volume.state.dropletIds, [control(afterUp).id], "the state volume is attached to the control droplet");
    const db = headscale(afterUp).dbs[volume.id];
    assert.ok(db, "Headscale's database lives on the state volume");
    assert.ok(headscale(afterUp).droplets[control(afterUp).id]?.blob, "the control node's first boot sealed an API key");
    assert.equal(db.apiKeys.length, 1);
    assert.deepEqual(db.users.map((u) => u.email).sort(), ["alice@example.org", "bob@example.org"]);
    // One tagged single-use key per cluster node, each used by its node; the deployer's key, untagged, unused.
    assert.deepEqual(db.keys.map((k) => [k.aclTags.join(","), k.used]).sort(), [["", false], ["tag:hm-prod", true], ["tag:hm-prod", true], ["tag:hm-prod", true]]);
    assert.deepEqual(db.nodes.map((n) => n.name).sort(), ["hm-prod-1", "hm-prod-2", "hm-prod-3"]);
    // The docker provider reaches the swarm at a node's Headscale address (found by cloud-headscale-<node>-address).
    assert.ok(afterUp.commands.some((c) => c.urn.endsWith("-init") && c.op === "create"), "the swarm was initialised over the tailnet");
    assert.equal(afterUp.devices.length, 0, "nothing joined Tailscale");
  });

  it("a second preview with no change is empty", () => {
    assert.equal(second.status, 0, second.out.slice(-4000));
    const changes = Object.entries(second.summary ?? {}).filter(([op, n]) => op !== "same" && n > 0);
    assert.deepEqual(changes, [], second.out.slice(-6000));
  });

  it("replacing the control node: its volume attachment goes before its droplet, the protected volume stays and follows it, the same database answers", () => {
    assert.equal(replace.status, 0, replace.out.slice(-6000));
    const ran = afterReplace.journal.slice(afterUp.journal.length);
    const one = (op: string, type: string, name: string) => {
      const found = ran.filter((j) => j.op === op && j.type === type && j.name === name);
      assert.equal(found.length, 1, `${op} ${name}:\n${ran.map((j) => `${j.seq} ${j.op} ${j.name}`).join("\n")}`);
      return found[0]!.seq;
    };
    const detached = one("delete", ATTACHMENT, "cloud-headscale-state-attach");
    const deleted = one("delete", DROPLET, "cloud-headscale-node");
    const created = one("create", DROPLET, "cloud-headscale-node");
    const attached = one("create", ATTACHMENT, "cloud-headscale-state-attach");
    assert.ok(detached < deleted && deleted < created && created < attached, `order: detach ${detached}, delete ${deleted}, create ${created}, attach ${attached}`);
    // protect (and retainOnDelete): the engine never touched the volume; it is the same one, now on the new droplet only.
    assert.deepEqual(ran.filter((j) => j.type === VOLUME), []);
    const volume = stateVolume(afterReplace);
    assert.equal(volume.id, stateVolume(afterUp).id);
    assert.notEqual(control(afterReplace).id, control(afterUp).id);
    assert.deepEqual(volume.state.dropletIds, [control(afterReplace).id]);
    // The new boot found the database on the volume: the same nodes (identity kept), and one more API key, handed over anew.
    const db = headscale(afterReplace).dbs[volume.id]!;
    assert.deepEqual(db.nodes.map((n) => n.id), headscale(afterUp).dbs[volume.id]!.nodes.map((n) => n.id));
    assert.equal(db.apiKeys.length, 2);
    assert.ok(headscale(afterReplace).droplets[control(afterReplace).id]?.blob, "the new control node sealed a key for the handover");
    // The A record follows the new address; nothing of the cluster is replaced.
    const a = objectsOf(afterReplace, "cloudflare:index/dnsRecord:DnsRecord").find((r) => r.state.name === "hs.example.org")!;
    assert.equal(a.state.content, control(afterReplace).state.ipv4Address);
    assert.deepEqual(ran.filter((j) => j.type === DROPLET && j.name !== "cloud-headscale-node"), []);
    assert.equal(replace.summary?.delete ?? 0, 0, JSON.stringify(replace.summary));
  });
});

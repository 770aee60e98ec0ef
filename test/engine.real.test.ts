/**
 * The real program through Pulumi's own engine (the CLI built by test/engine/build-engine.sh) over
 * the simulated providers: the engine judges what a change does (update, replace, protect), not our
 * own diff. One sandbox for the whole file: an `up` of prod into the simulated cloud, then previews
 * of changes against that state.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
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
    const r = run(dir, "preview", "prod", "--set", "region=ams3");
    assert.notEqual(r.status, 0, "the preview must fail: the volumes and the reserved IP are protected");
    const all = steps(r.out);
    const of = (type: string) => all.filter((s) => s.type === type);
    assert.deepEqual(of("digitalocean:index/droplet:Droplet").map((s) => s.op), ["replace", "replace", "replace"], r.out.slice(0, 6000));
    assert.deepEqual(of("digitalocean:index/volume:Volume").map((s) => s.op), ["replace", "replace", "replace"]);
    // The engine's own refusal, for each protected volume.
    for (const v of of("digitalocean:index/volume:Volume")) {
      assert.ok(r.out.includes(`unable to replace resource "${v.urn}"\nas it is currently marked for protection`), `no protect error for ${v.urn}`);
    }
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

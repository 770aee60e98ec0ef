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

/** The engine's preview lines for resources of `type`: `+-` replace, `~` update, `+` create, `-` delete. */
function stepLines(out: string, type: string): string[] {
  return out.split("\n").filter((l) => l.includes(` ${type} `));
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
    const droplets = stepLines(r.out, "digitalocean:index/droplet:Droplet");
    assert.ok(droplets.length > 0 && droplets.every((l) => /\+-|replace/.test(l)), droplets.join("\n") || r.out.slice(-6000));
    assert.match(r.out, /marked for protection/);
    assert.match(r.out, /digitalocean:index\/volume:Volume/);
  });

  it("a new Dendrite image updates one service in place and replaces nothing", () => {
    const r = run(dir, "preview", "prod", "--set", "images={dendrite: matrixdotorg/dendrite-monolith:v0.15.3}");
    assert.equal(r.status, 0, r.out.slice(-4000));
    const s = r.summary ?? {};
    assert.equal(s.update, 1, JSON.stringify(s));
    assert.equal(s.replace ?? 0, 0, JSON.stringify(s));
    assert.equal(s.create ?? 0, 0, JSON.stringify(s));
    assert.equal(s.delete ?? 0, 0, JSON.stringify(s));
    const updated = stepLines(r.out, "docker:index/service:Service").filter((l) => /~/.test(l));
    assert.equal(updated.length, 1, updated.join("\n"));
    assert.match(updated[0]!, /dendrite/);
  });
});

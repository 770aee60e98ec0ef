import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, before, test } from "node:test";
import * as path from "node:path";
import { localSwarmScript, STACK_LABEL } from "../components/platform/local";
import { findTool, skipReason } from "./support/realTool";

// The local target on an engine that already runs a swarm, judged by a real Docker engine: a private
// Debian dockerd in a network namespace of its own (the swarm listens on that namespace's loopback;
// no traffic leaves it). The init script runs as `pulumi up` runs it (sh, docker CLI). One
// hardened-matrix stack per swarm: a swarm of another stack, or unlabelled objects of our fixed names
// on a first deploy, are refused before anything is made. Everything is torn down even when a step fails.

const TOOLS = {
  dockerd: findTool("dockerd", "docker.io"),
  docker: findTool("docker", "docker.io"),
  ip: findTool("ip", "iproute2"),
  nsenter: findTool("nsenter", "util-linux"),
  unshare: findTool("unshare", "util-linux"),
  timeout: findTool("timeout", "coreutils"),
};
const missing = Object.entries(TOOLS).find(([, p]) => p === undefined);
const notRoot = process.getuid?.() !== 0;
if (notRoot && process.env.CI) throw new Error("localSwarm.real.test needs root in CI (network namespace, dockerd)");
const skip = missing ? skipReason(missing[0], "docker.io") : notRoot ? "needs root (network namespace, dockerd)" : false;
const t = TOOLS as Record<keyof typeof TOOLS, string>;

const LIFETIME_SECONDS = 240;
const POOL = "10.231.0.0/16";
let dir = "";
let netns = "";
let engine: ReturnType<typeof spawn> | undefined;
const sock = () => path.join(dir, "docker.sock");
const cliEnv = () => ({ ...process.env, DOCKER_HOST: `unix://${sock()}`, DOCKER_CONFIG: path.join(dir, "cli") });

function docker(args: string[], timeoutMs = 60_000): { code: number; out: string } {
  const r = spawnSync(t.docker, args, { encoding: "utf8", timeout: timeoutMs, env: cliEnv() });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/** The init command's script, run as the command provider runs it (`/bin/sh -c`), against the private engine. */
function init(stack: string, fresh: boolean): { code: number; out: string } {
  const r = spawnSync("/bin/sh", ["-c", localSwarmScript(POOL, stack, fresh)], { encoding: "utf8", timeout: 120_000, env: cliEnv() });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

const nodeId = () => docker(["info", "--format", "{{.Swarm.NodeID}}"]).out.trim();
const owner = () => docker(["node", "inspect", "--format", `{{ index .Spec.Labels "${STACK_LABEL}" }}`, nodeId()]).out.trim();
const unlabel = () => assert.equal(docker(["node", "update", "--label-rm", STACK_LABEL, nodeId()]).code, 0);

function ourProcesses(): number[] {
  const pids: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, "utf8").includes(dir)) pids.push(Number(p));
    } catch {
      // gone
    }
  }
  return pids;
}

async function teardown(): Promise<void> {
  if (!dir) return;
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    for (const pid of ourProcesses()) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    for (let i = 0; i < 50 && ourProcesses().length > 0; i++) await new Promise((r) => setTimeout(r, 200));
  }
  if (engine && engine.exitCode === null) engine.kill("SIGKILL");
  if (netns) spawnSync(t.ip, ["netns", "del", netns]);
  rmSync(dir, { recursive: true, force: true });
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync("/tmp/hm-localswarm-");
  netns = `hmlocalsw${process.pid}`;
  execFileSync(t.ip, ["netns", "add", netns]);
  execFileSync(t.ip, ["-n", netns, "link", "set", "lo", "up"]);
  for (const d of ["data", "x", "cli", "cg"]) mkdirSync(path.join(dir, d), { recursive: true, mode: 0o700 });
  const config = path.join(dir, "daemon.json");
  writeFileSync(
    config,
    JSON.stringify({ "deprecated-key-path": path.join(dir, "key.json"), "storage-driver": "vfs", bridge: "none", iptables: false, ip6tables: false, "log-level": "warn" }),
  );
  const script = [
    "set -e",
    `mount --rbind /sys/fs/cgroup ${dir}/cg`,
    "mount -t sysfs sysfs /sys",
    `mount --move ${dir}/cg /sys/fs/cgroup`,
    `exec ${t.timeout} --signal=TERM --kill-after=10 ${LIFETIME_SECONDS} ${t.dockerd} --config-file ${config} --data-root ${dir}/data --exec-root ${dir}/x --pidfile ${dir}/docker.pid -H unix://${sock()}`,
  ].join("\n");
  const log = openSync(path.join(dir, "dockerd.log"), "a");
  engine = spawn(t.nsenter, [`--net=/run/netns/${netns}`, t.unshare, "--mount", "--uts", "--propagation", "slave", "sh", "-c", script], { stdio: ["ignore", log, log], detached: true });
  closeSync(log);
  const deadline = Date.now() + 60_000;
  while (docker(["version", "--format", "{{.Server.Version}}"], 10_000).code !== 0) {
    if (engine.exitCode !== null || Date.now() > deadline) throw new Error(`dockerd did not start:\n${readFileSync(path.join(dir, "dockerd.log"), "utf8").slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
});

after(teardown);
process.on("exit", () => {
  if (dir && existsSync(dir) && netns) spawnSync(t.ip, ["netns", "del", netns]);
});

test("a fresh engine becomes a swarm labelled for the stack; the same stack again is fine", { skip, timeout: 180_000 }, () => {
  const first = init("local", true);
  assert.equal(first.code, 0, first.out);
  assert.equal(docker(["info", "--format", "{{.Swarm.LocalNodeState}}"]).out.trim(), "active");
  assert.equal(owner(), "local");
  // A destroyed and re-created `local` stack (its volumes were kept on purpose) deploys again.
  assert.equal(docker(["volume", "create", "hardened-matrix-postgres"]).code, 0);
  const again = init("local", true);
  assert.equal(again.code, 0, again.out);
});

test("a swarm that carries another hardened-matrix stack is refused, on a first deploy and on an update", { skip, timeout: 120_000 }, () => {
  for (const fresh of [true, false]) {
    const r = init("other", fresh);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /this swarm already carries hardened-matrix stack "local" \(node label hardened-matrix\.stack\)/);
    assert.equal(owner(), "local", "the label is left alone");
  }
});

test("first deploy on an existing swarm: unlabelled objects of our names are refused, naming them; nothing is labelled", { skip, timeout: 120_000 }, () => {
  unlabel();
  // Someone else's: a service named dendrite (its image need not exist for the object to), an overlay
  // network named edge; and the volume left from before.
  assert.equal(docker(["network", "create", "--driver", "overlay", "edge"]).code, 0);
  const svc = docker(["service", "create", "--detach", "--no-resolve-image", "--name", "dendrite", "--replicas", "0", "hm-absent:1"]);
  assert.equal(svc.code, 0, svc.out);
  const r = init("local", true);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out, /this engine already has service dendrite, network edge, volume hardened-matrix-postgres, not made by stack "local"/);
  assert.match(r.out, new RegExp(`claim them: docker node update --label-add hardened-matrix\\.stack=local ${nodeId()}`));
  assert.equal(owner(), "", "not labelled");
});

test("an update of a stack deployed before the label existed claims the swarm; objects of other names never block", { skip, timeout: 120_000 }, () => {
  const r = init("local", false);
  assert.equal(r.code, 0, r.out);
  assert.equal(owner(), "local");
  unlabel();
  for (const [kind, name] of [["service", "dendrite"], ["network", "edge"], ["volume", "hardened-matrix-postgres"]] as const) {
    assert.equal(docker([kind, "rm", name]).code, 0);
  }
  assert.equal(docker(["network", "create", "--driver", "overlay", "someone-elses"]).code, 0);
  const fresh = init("local", true);
  assert.equal(fresh.code, 0, fresh.out);
  assert.equal(owner(), "local");
});

test("teardown leaves nothing: no process of the engine, no namespace", { skip, timeout: 60_000 }, async () => {
  await teardown();
  assert.deepEqual(ourProcesses(), []);
  assert.ok(!execFileSync(t.ip, ["netns", "list"], { encoding: "utf8" }).includes(netns));
  assert.ok(!existsSync(dir));
  dir = "";
});

import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { after, before, test } from "node:test";
import * as path from "node:path";
import { hardenedServiceArgs, type HardenedServiceArgs } from "../components/hardening";
import { findTool, skipReason } from "./support/realTool";

// The helper's tmpfs mount, judged by a real Docker engine: a private Debian dockerd in a network
// namespace of its own (no traffic leaves it; containers run with --network none), a busybox image
// imported from busybox-static, and a read-only container as a non-root user writing into the tmpfs.
// `docker run --mount type=tmpfs` sets the same TmpfsOptions (SizeBytes, Mode) a Swarm task's mount
// carries (moby api/types/mount). Everything is torn down even when a step fails.

const TOOLS = {
  dockerd: findTool("dockerd", "docker.io"),
  docker: findTool("docker", "docker.io"),
  busybox: findTool("busybox", "busybox-static"),
  ip: findTool("ip", "iproute2"),
  nsenter: findTool("nsenter", "util-linux"),
  unshare: findTool("unshare", "util-linux"),
  timeout: findTool("timeout", "coreutils"),
};
const missing = Object.entries(TOOLS).find(([, p]) => p === undefined);
const notRoot = process.getuid?.() !== 0;
if (notRoot && process.env.CI) throw new Error("tmpfs.real.test needs root in CI (network namespace, dockerd)");
const skip = missing ? skipReason(missing[0], missing[0] === "busybox" ? "busybox-static" : "docker.io") : notRoot ? "needs root (network namespace, dockerd)" : false;
const t = TOOLS as Record<keyof typeof TOOLS, string>;

const LIFETIME_SECONDS = 180;
let dir = "";
let netns = "";
let engine: ReturnType<typeof spawn> | undefined;
const sock = () => path.join(dir, "docker.sock");

function docker(args: string[], timeoutMs = 60_000): { code: number; out: string } {
  const r = spawnSync(t.docker, ["-H", `unix://${sock()}`, ...args], { encoding: "utf8", timeout: timeoutMs, env: { ...process.env, DOCKER_CONFIG: path.join(dir, "cli") } });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/** Processes whose command line or executable mentions our directory (dockerd, its containerd, shims). */
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
  if (existsSync(sock())) docker(["rm", "-f", ...docker(["ps", "-aq"]).out.split(/\s+/).filter(Boolean)], 20_000);
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
  // dockerd's mounts lived in its own mount namespace and went with it.
  rmSync(dir, { recursive: true, force: true });
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync("/tmp/hm-tmpfs-");
  netns = `hmtmpfs${process.pid}`;
  execFileSync(t.ip, ["netns", "add", netns]);
  execFileSync(t.ip, ["-n", netns, "link", "set", "lo", "up"]);
  for (const d of ["data", "x", "cli", "cg"]) mkdirSync(path.join(dir, d), { recursive: true, mode: 0o700 });
  // The image's /bin: the non-root user must be able to traverse it.
  mkdirSync(path.join(dir, "img/bin"), { recursive: true, mode: 0o755 });
  const config = path.join(dir, "daemon.json");
  writeFileSync(
    config,
    JSON.stringify({
      // Its own engine ID key, storage driver vfs (FACTS: a multi-node swarm on one machine); no bridge,
      // no iptables: the test needs neither, and the namespace stays empty.
      "deprecated-key-path": path.join(dir, "key.json"),
      "storage-driver": "vfs",
      bridge: "none",
      iptables: false,
      ip6tables: false,
      "log-level": "warn",
    }),
  );
  // `ip netns exec` would hide the cgroup tree: enter the namespace, then re-mount sysfs keeping /sys/fs/cgroup.
  const script = [
    "set -e",
    `mount --rbind /sys/fs/cgroup ${dir}/cg`,
    "mount -t sysfs sysfs /sys",
    `mount --move ${dir}/cg /sys/fs/cgroup`,
    `exec ${t.timeout} --signal=TERM --kill-after=10 ${LIFETIME_SECONDS} ${t.dockerd} --config-file ${config} --data-root ${dir}/data --exec-root ${dir}/x --pidfile ${dir}/docker.pid -H unix://${sock()}`,
  ].join("\n");
  const log = openSync(path.join(dir, "dockerd.log"), "a");
  engine = spawn(t.nsenter, [`--net=/run/netns/${netns}`, t.unshare, "--mount", "--propagation", "slave", "sh", "-c", script], { stdio: ["ignore", log, log], detached: true });
  closeSync(log);
  const deadline = Date.now() + 60_000;
  while (docker(["version", "--format", "{{.Server.Version}}"], 10_000).code !== 0) {
    if (engine.exitCode !== null || Date.now() > deadline) throw new Error(`dockerd did not start:\n${readFileSync(path.join(dir, "dockerd.log"), "utf8").slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 300));
  }
  // A one-binary image: static busybox and the applets the test uses.
  copyFileSync(t.busybox, path.join(dir, "img/bin/busybox"));
  for (const applet of ["sh", "touch", "stat", "echo"]) symlinkSync("busybox", path.join(dir, "img/bin", applet));
  const tar = spawnSync("tar", ["-C", path.join(dir, "img"), "-c", "."], { maxBuffer: 64 * 1024 * 1024 });
  const imported = spawnSync(t.docker, ["-H", `unix://${sock()}`, "import", "-", "hm-busybox:1"], { input: tar.stdout, encoding: "utf8", env: { ...process.env, DOCKER_CONFIG: path.join(dir, "cli") } });
  assert.equal(imported.status, 0, imported.stderr);
});

after(teardown);
process.on("exit", () => {
  // Last resort if the runner is interrupted between tests: the engine dies with its timeout anyway.
  if (dir && existsSync(dir) && netns) spawnSync(t.ip, ["netns", "del", netns]);
});

const base: HardenedServiceArgs = {
  serviceName: "probe",
  image: "hm-busybox:1",
  user: "65534:65534",
  memoryLimitMb: 32,
  memoryReservationMb: 8,
  healthcheck: { test: ["true"] },
  networkIds: [],
};

/** Runs the helper's container spec the way a task does: its user, read-only root, its tmpfs mounts. */
function runAsService(a: HardenedServiceArgs, script: string): { code: number; out: string } {
  const spec = (hardenedServiceArgs(a).taskSpec as { containerSpec: { user: string; readOnly: boolean; mounts: Array<{ type: string; target: string; tmpfsOptions: { sizeBytes: number; mode: number } }> } }).containerSpec;
  const mounts = spec.mounts.filter((m) => m.type === "tmpfs").flatMap((m) => ["--mount", `type=tmpfs,dst=${m.target},tmpfs-size=${m.tmpfsOptions.sizeBytes},tmpfs-mode=${m.tmpfsOptions.mode.toString(8)}`]);
  return docker(["run", "--rm", "--network", "none", "--user", spec.user, ...(spec.readOnly ? ["--read-only"] : []), "--cap-drop", "ALL", ...mounts, "hm-busybox:1", "sh", "-c", script]);
}

test("the helper's default tmpfs is writable by the non-root service user on a read-only root; 0700 is not", { skip, timeout: 120_000 }, () => {
  const write = "stat -c '%a %u:%g' /scratch; touch /scratch/f && echo WROTE";
  const byDefault = runAsService({ ...base, tmpfs: [{ target: "/scratch", sizeMb: 1 }] }, write);
  assert.equal(byDefault.code, 0, byDefault.out);
  // Root-owned (Swarm's tmpfs options have no uid), world-writable and sticky.
  assert.match(byDefault.out, /^1777 0:0\nWROTE\n$/);
  // The old default: the same container cannot write.
  const old = runAsService({ ...base, tmpfs: [{ target: "/scratch", sizeMb: 1, mode: 0o700 }] }, write);
  assert.notEqual(old.code, 0);
  assert.match(old.out, /700 0:0\n.*Permission denied/s);
  // The root filesystem itself stays read-only.
  const root = runAsService({ ...base, tmpfs: [{ target: "/scratch", sizeMb: 1 }] }, "touch /f");
  assert.notEqual(root.code, 0);
  assert.match(root.out, /Read-only file system/);
});

test("teardown leaves nothing: no process of the engine, no namespace", { skip, timeout: 60_000 }, async () => {
  await teardown();
  assert.deepEqual(ourProcesses(), []);
  assert.ok(!execFileSync(t.ip, ["netns", "list"], { encoding: "utf8" }).includes(netns));
  assert.ok(!existsSync(dir));
  dir = "";
});

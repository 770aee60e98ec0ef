import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { accessSync, chmodSync, constants, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import { renderCloudInit, type CloudInitInput } from "../components/render/cloudInit";
import { DOCKER_SOCKET_GID } from "../components/settings";
import { planToDisk, STACKS } from "./support/plan";
import { findTool, skipReason } from "./support/realTool";

// The docker group step of the droplets' cloud-init, run by the real groupadd against a copy of
// this machine's Debian 12 group database, and the rendered boot scripts checked by shellcheck
// as cloud-init itself assembles them (cloudinit.util.shellify, used by cc_bootcmd and cc_runcmd).

const groupadd = findTool("groupadd", "passwd");
const unshare = findTool("unshare", "util-linux");
const shellcheck = findTool("shellcheck", "shellcheck");
const cloudInit = findTool("cloud-init", "cloud-init");
const isRoot = process.getuid?.() === 0;
const skipGroupadd = !groupadd ? skipReason("groupadd", "passwd") : !isRoot && !unshare ? skipReason("unshare", "util-linux") : false;

const work = mkdtempSync(path.join(tmpdir(), "hm-dockergroup-"));
after(() => rmSync(work, { recursive: true, force: true }));

// The step as rendered before this fix: on Debian 12 gid 999 is systemd-journal.
const OLD_STEP = ["sh", "-c", "getent group docker >/dev/null || groupadd --system --gid 999 docker"];

type UserData = { bootcmd: (string | string[])[]; runcmd: string[]; write_files?: { path: string; content: string }[] };

const devUserData: UserData = (() => {
  const plan = planToDisk("dev");
  const [, text] = [...plan.files].find(([p]) => p.endsWith("/user-data.yaml"))!;
  return parse(text) as UserData;
})();

function groupStep(ud: UserData): string[] {
  const step = ud.bootcmd.find((e): e is string[] => Array.isArray(e) && e[0] === "sh" && e.join(" ").includes("groupadd"));
  assert.ok(step, "no docker group step in bootcmd");
  return step;
}

function render(gid: number): UserData {
  const input: CloudInitInput = { hostname: "n1", tailscale: { authKey: "tskey-auth-x", hostname: "n1", tags: ["tag:server"], ssh: true }, volumes: [], dockerGid: gid };
  return parse(renderCloudInit(input)) as UserData;
}

/** cloud-init's own script assembly: the interpreter of /usr/bin/cloud-init running util.shellify. */
function shellify(entries: (string | string[])[]): string {
  const python = readFileSync(cloudInit!, "utf8").split("\n")[0]!.replace(/^#!\s*/, "").split(" ")[0]!;
  const r = spawnSync(python, ["-c", "import json, sys\nfrom cloudinit import util\nsys.stdout.write(util.shellify(json.load(sys.stdin)))"], {
    input: JSON.stringify(entries),
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

function readable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

let sandboxes = 0;
/**
 * A copy of this machine's group database (what groupadd --prefix reads and writes). Without root,
 * /etc/shadow and /etc/gshadow are unreadable: locked entries are made for every name instead.
 * `withoutDocker` removes the docker group, as on a fresh droplet before docker.io is installed.
 */
function sandbox(edit: (group: string) => string): string {
  const dir = path.join(work, `db${sandboxes++}`);
  mkdirSync(path.join(dir, "etc"), { recursive: true });
  for (const f of ["group", "passwd", "login.defs"]) copyFileSync(`/etc/${f}`, path.join(dir, "etc", f));
  const group = edit(readFileSync(`/etc/group`, "utf8"));
  writeFileSync(path.join(dir, "etc/group"), group);
  const names = (text: string) => text.split("\n").filter(Boolean).map((l) => l.split(":")[0]!);
  const keep = (text: string, wanted: string[]) => `${text.split("\n").filter((l) => l && wanted.includes(l.split(":")[0]!)).join("\n")}\n`;
  writeFileSync(path.join(dir, "etc/gshadow"), readable("/etc/gshadow") ? keep(readFileSync("/etc/gshadow", "utf8"), names(group)) : names(group).map((n) => `${n}:!::\n`).join(""));
  const passwd = readFileSync("/etc/passwd", "utf8");
  writeFileSync(path.join(dir, "etc/shadow"), readable("/etc/shadow") ? readFileSync("/etc/shadow", "utf8") : names(passwd).map((n) => `${n}:!:19000:0:99999:7:::\n`).join(""));
  // groupadd --prefix DIR, and getent reading DIR/etc/group, in place of the real ones on PATH.
  const bin = path.join(dir, "bin");
  mkdirSync(bin);
  writeFileSync(path.join(bin, "groupadd"), `#!/bin/sh\nexec ${groupadd} --prefix "$HM_PREFIX" "$@"\n`);
  writeFileSync(
    path.join(bin, "getent"),
    `#!/bin/sh\n[ "$1" = group ] || exit 1\nawk -F: -v k="$2" '$1 == k || $3 == k { print; found = 1; exit } END { exit found ? 0 : 2 }' "$HM_PREFIX/etc/group"\n`,
  );
  chmodSync(path.join(bin, "groupadd"), 0o755);
  chmodSync(path.join(bin, "getent"), 0o755);
  return dir;
}

const withoutDocker = (g: string) => g.split("\n").filter((l) => !l.startsWith("docker:")).join("\n");

/** Runs one bootcmd entry exactly as cloud-init would (shellified, /bin/sh) against the copy. */
function runStep(dir: string, step: string[]): { status: number | null; stderr: string; group: string } {
  const script = path.join(dir, "step.sh");
  writeFileSync(script, shellify([step]));
  const cmd = isRoot ? ["/bin/sh", script] : [unshare!, "--user", "--map-root-user", "/bin/sh", script];
  const r = spawnSync(cmd[0]!, cmd.slice(1), {
    encoding: "utf8",
    timeout: 30_000,
    env: { PATH: `${path.join(dir, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin`, HM_PREFIX: dir },
  });
  return { status: r.status, stderr: r.stderr, group: readFileSync(path.join(dir, "etc/group"), "utf8") };
}

test("this machine's group database is Debian 12's: gid 999 is taken by systemd-journal", { skip: skipGroupadd }, () => {
  assert.match(readFileSync("/etc/group", "utf8"), /^systemd-journal:x:999:/m);
});

test("the old step fails on a fresh Debian 12 droplet (groupadd exits 4: gid 999 exists)", { skip: skipGroupadd }, () => {
  const r = runStep(sandbox(withoutDocker), OLD_STEP);
  assert.equal(r.status, 4, r.stderr);
  assert.match(r.stderr, /GID '999' already exists/);
  assert.doesNotMatch(r.group, /^docker:/m);
});

test("the old step accepts a docker group with any other gid, silently", { skip: skipGroupadd }, () => {
  const r = runStep(sandbox((g) => `${withoutDocker(g)}\ndocker:x:107:\n`), OLD_STEP);
  assert.equal(r.status, 0);
});

test(`the rendered step (dev plan, default gid ${DOCKER_SOCKET_GID}) creates docker with that gid, and again on the next boot`, { skip: skipGroupadd }, () => {
  const step = groupStep(devUserData);
  const dir = sandbox(withoutDocker);
  const first = runStep(dir, step);
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.group, new RegExp(`^docker:x:${DOCKER_SOCKET_GID}:$`, "m"));
  assert.match(readFileSync(path.join(dir, "etc/gshadow"), "utf8"), /^docker:/m);
  const again = runStep(dir, step);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(again.group, first.group);
});

test("the rendered step fails loudly when the gid is taken", { skip: skipGroupadd }, () => {
  // Rendered with the old default: groupadd itself refuses, and the step says which setting.
  const taken = runStep(sandbox(withoutDocker), groupStep(render(999)));
  assert.notEqual(taken.status, 0);
  assert.match(taken.stderr, /GID '999' already exists/);
  assert.match(taken.stderr, /cannot create group docker with gid 999 \(dockerSocketGid\)/);
  const other = runStep(sandbox((g) => `${withoutDocker(g)}\nsomething:x:${DOCKER_SOCKET_GID}:\n`), groupStep(devUserData));
  assert.notEqual(other.status, 0);
  assert.doesNotMatch(other.group, /^docker:/m);
});

test("the rendered step fails loudly when the docker group exists with another gid", { skip: skipGroupadd }, () => {
  const r = runStep(sandbox((g) => `${withoutDocker(g)}\ndocker:x:107:\n`), groupStep(devUserData));
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`group docker has gid 107, not ${DOCKER_SOCKET_GID} \\(dockerSocketGid\\)`));
});

test("a failing bootcmd step fails cloud-init's bootcmd script, whatever follows it", { skip: skipGroupadd }, () => {
  // bootcmd starts with set -eu: cloud-init runs the whole list as one /bin/sh script.
  assert.equal(devUserData.bootcmd[0], "set -eu");
  const dir = sandbox(withoutDocker);
  const script = path.join(dir, "boot.sh");
  writeFileSync(script, shellify(["set -eu", groupStep(render(999)), ["touch", path.join(dir, "after")]]));
  const r = spawnSync(isRoot ? "/bin/sh" : unshare!, isRoot ? [script] : ["--user", "--map-root-user", "/bin/sh", script], {
    encoding: "utf8",
    env: { PATH: `${path.join(dir, "bin")}:/usr/sbin:/usr/bin:/sbin:/bin`, HM_PREFIX: dir },
  });
  assert.notEqual(r.status, 0);
  assert.equal(readable(path.join(dir, "after")), false);
});

test("the bootstrap stops before its marker unless docker.sock is in the proxy's group", () => {
  const check = devUserData.runcmd.find((l) => l.includes("/var/run/docker.sock"));
  assert.ok(check, "runcmd does not check the socket's group");
  const marker = devUserData.runcmd.findIndex((l) => l.includes("bootstrap-complete"));
  assert.ok(devUserData.runcmd.indexOf(check) < marker, "the check comes before the marker");
  // `stat` stands in for the real one, answering the socket's group (or failing: no socket).
  const bin = mkdtempSync(path.join(work, "stat-"));
  writeFileSync(path.join(bin, "stat"), `#!/bin/sh\n[ -n "\${SOCK_GID:-}" ] || { echo "stat: cannot statx '/var/run/docker.sock'" >&2; exit 1; }\necho "$SOCK_GID"\n`);
  chmodSync(path.join(bin, "stat"), 0o755);
  const run = (gid?: number) =>
    spawnSync("/bin/sh", ["-c", `set -eu\n${check}\necho marker`], {
      encoding: "utf8",
      env: { PATH: `${bin}:/usr/bin:/bin`, ...(gid === undefined ? {} : { SOCK_GID: String(gid) }) },
    });
  const ok = run(DOCKER_SOCKET_GID);
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(ok.stdout, "marker\n");
  for (const bad of [107, undefined]) {
    const r = run(bad);
    assert.equal(r.status, 1);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, new RegExp(`not in group ${DOCKER_SOCKET_GID} \\(dockerSocketGid; found: ${bad ?? "no socket"}\\)`));
  }
});

function shellcheckScript(text: string): { status: number | null; output: string } {
  const r = spawnSync(shellcheck!, ["-s", "sh", "-"], { input: text, encoding: "utf8", timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

const skipShellcheck = !shellcheck ? skipReason("shellcheck", "shellcheck") : !cloudInit ? skipReason("cloud-init", "cloud-init") : false;

test("shellcheck finds a fault (the check can fail)", { skip: skipShellcheck }, () => {
  assert.notEqual(shellcheckScript('#!/bin/sh\nrm -rf $dir/*\n').status, 0);
});

for (const stack of STACKS) {
  test(`${stack}: every node's bootcmd, runcmd (as cloud-init assembles them) and shell scripts pass shellcheck`, { skip: skipShellcheck }, () => {
    const plan = planToDisk(stack);
    const files = [...plan.files].filter(([p]) => p.endsWith("/user-data.yaml"));
    for (const [p, text] of files) {
      const ud = parse(text) as UserData;
      const scripts: [string, string][] = [
        ["bootcmd", shellify(ud.bootcmd)],
        ["runcmd", shellify(ud.runcmd)],
        // Scripts passed to `sh -c` are strings to the outer script: check them on their own.
        ...ud.bootcmd.filter((e): e is string[] => Array.isArray(e) && e[0] === "sh" && e[1] === "-c").map((e): [string, string] => ["bootcmd sh -c", `#!/bin/sh\n${e[2]}`]),
        ...(ud.write_files ?? []).filter((f) => f.content.startsWith("#!/bin/sh")).map((f): [string, string] => [f.path, f.content]),
      ];
      assert.ok(scripts.length >= 4, `${stack}/${p}: no shell scripts found`);
      for (const [what, script] of scripts) {
        const r = shellcheckScript(script);
        assert.equal(r.status, 0, `${stack}/${p} ${what}:\n${r.output}`);
      }
    }
  });
}

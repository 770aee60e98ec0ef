import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { parse } from "yaml";
import { renderHeadscaleConfig, renderHeadscalePolicy } from "../components/render/headscale";
import { generateSealingKeyPair } from "../components/render/headscaleBootstrap";
import { HEADSCALE_UNIT, renderHeadscaleCloudInit, STATE_MOUNT, STATE_VOLUME_WAIT_SECONDS } from "../components/render/headscaleCloudInit";
import { volumeDevice } from "../components/render/cloudInit";
import { DEFAULT_IMAGES } from "../components/settings";
import { findTool } from "./support/realTool";

// The control node's first boot when DigitalOcean attaches the state volume after the droplet
// exists (the VolumeAttachment needs the droplet's id). cloud-init's own code turns runcmd into the
// script it runs (cloudinit/config/cc_runcmd.py: util.shellify); that script runs here with real
// sh, blkid, mkfs.ext4, mount and mountpoint on a loop device that appears late, and a stand-in
// systemctl that only records what it is asked. Only paths are moved under a temporary directory.
const cloudInit = findTool("cloud-init", "cloud-init");
const losetup = findTool("losetup", "mount");
const mkfs = findTool("mkfs.ext4", "e2fsprogs");
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI) throw new Error("the Headscale state volume test needs root in CI (loop devices, mount)");
const skip = !cloudInit ? "cloud-init missing" : !losetup || !mkfs ? "losetup or mkfs.ext4 missing" : !isRoot ? "needs root for loop devices and mount" : false;

const VOLUME = "hm-prod-headscale";
const work = mkdtempSync(path.join(tmpdir(), "hm-hs-volume-"));
const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
  rmSync(work, { recursive: true, force: true });
});

interface UserData {
  write_files: { path: string; content: string }[];
  runcmd: (string | string[])[];
}
const userData = parse(
  renderHeadscaleCloudInit({
    hostname: "hs",
    image: DEFAULT_IMAGES.headscale,
    configYaml: renderHeadscaleConfig({ serverFqdn: "hs.example.org", acmeEmail: "ops@example.org", acmeCa: "letsencrypt", derp: false }),
    policyHujson: renderHeadscalePolicy({ admins: ["alice@example.com"], nodeTag: "tag:hm-node", adminPorts: [22], sshUsers: ["root"] }),
    volumeName: VOLUME,
    derp: false,
    bootstrap: { sealingPublicKeyPem: generateSealingKeyPair().publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 1800 },
  }).replace(/^#cloud-config\n/, ""),
) as UserData;

/** The runcmd script exactly as cloud-init writes it (its Python, its shellify). */
function runcmdScript(): string {
  const python = readFileSync(cloudInit!, "utf8").split("\n")[0]!.replace(/^#!\s*/, "").trim();
  const r = spawnSync(python, ["-c", "import json,sys; from cloudinit import util; sys.stdout.write(util.shellify(json.load(sys.stdin)))"], { input: JSON.stringify(userData.runcmd), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

interface Boot {
  dir: string;
  device: string;
  mount: string;
  fstab: string;
  log: string;
  script: string;
}

/** A node's filesystem under `dir`: the user data's files, and the runcmd with its paths moved there. */
function prepareBoot(name: string): Boot {
  const dir = mkdtempSync(path.join(work, `${name}-`));
  const b: Boot = { dir, device: path.join(dir, "dev", VOLUME), mount: path.join(dir, "mnt", "state"), fstab: path.join(dir, "fstab"), log: path.join(dir, "systemctl.log"), script: path.join(dir, "runcmd") };
  mkdirSync(path.join(dir, "dev"));
  mkdirSync(path.join(dir, "bin"));
  writeFileSync(b.fstab, "");
  writeFileSync(path.join(dir, "bin", "systemctl"), `#!/bin/sh\necho "$*" >> '${b.log}'\n`);
  chmodSync(path.join(dir, "bin", "systemctl"), 0o755);
  let text = runcmdScript();
  for (const f of userData.write_files) {
    if (!text.includes(f.path)) continue;
    const local = path.join(dir, "files", f.path);
    mkdirSync(path.dirname(local), { recursive: true });
    writeFileSync(local, f.content);
    chmodSync(local, 0o755);
    text = text.split(f.path).join(local);
  }
  text = text
    .split(volumeDevice(VOLUME)).join(b.device)
    .split(STATE_MOUNT).join(b.mount)
    .split("/etc/fstab").join(b.fstab)
    .split(`'${STATE_VOLUME_WAIT_SECONDS}'`).join("'6'");
  writeFileSync(b.script, text);
  return b;
}

/** A DigitalOcean volume as the droplet sees it: a block device, linked by name, attached now. */
function attach(b: Boot, format: "blank" | "retained"): void {
  const img = path.join(b.dir, "volume.img");
  execFileSync("truncate", ["-s", "32M", img]);
  if (format === "retained") {
    execFileSync(mkfs!, ["-q", img]);
    // A retained volume: Headscale's database from the previous node.
    const m = path.join(b.dir, "seed");
    mkdirSync(m);
    execFileSync("mount", ["-o", "loop", img, m]);
    writeFileSync(path.join(m, "db.sqlite"), "previous node's database");
    execFileSync("umount", [m]);
  }
  const loop = execFileSync(losetup!, ["--find", "--show", img], { encoding: "utf8" }).trim();
  cleanups.push(() => spawnSync(losetup!, ["-d", loop]));
  symlinkSync(loop, b.device);
}

function mounted(dir: string): boolean {
  return spawnSync("mountpoint", ["-q", dir]).status === 0;
}

/** The unit's own refusal: its first ExecStartPre, run as systemd would, for `mountPoint`. */
function unitStartCheck(mountPoint: string): number | null {
  const unit = userData.write_files.find((f) => f.path === `/etc/systemd/system/${HEADSCALE_UNIT}`)!.content;
  const pre = unit.split("\n").find((l) => l.startsWith("ExecStartPre=") && !l.startsWith("ExecStartPre=-"));
  assert.ok(pre, "the Headscale unit checks its state directory before it starts");
  const argv = pre.slice("ExecStartPre=".length).split(" ").map((a) => (a === STATE_MOUNT ? mountPoint : a));
  return spawnSync(argv[0]!, argv.slice(1)).status;
}

function run(b: Boot): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("sh", [b.script], { env: { PATH: `${path.join(b.dir, "bin")}:${process.env.PATH}` }, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("exit", (code) => resolve({ code, stderr }));
  });
}

const calls = (b: Boot) => (existsSync(b.log) ? readFileSync(b.log, "utf8").trim().split("\n") : []);

describe("Headscale control node: first boot with a late state volume", { skip }, () => {
  test("the volume never attaches: the boot stops, Headscale is never enabled, and its unit refuses the root disk's directory", async () => {
    const b = prepareBoot("never");
    const r = await run(b);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /did not appear within 6s/);
    assert.ok(!calls(b).some((c) => c.includes(HEADSCALE_UNIT)), calls(b).join("\n"));
    mkdirSync(b.mount, { recursive: true });
    assert.equal(mounted(b.mount), false);
    assert.notEqual(unitStartCheck(b.mount), 0, "Headscale would not start on an empty directory of the root disk");
  });

  for (const format of ["blank", "retained"] as const) {
    test(`the volume (${format}) attaches 2 s after boot: it is mounted by UUID, kept, and only then Headscale starts`, async () => {
      const b = prepareBoot(format);
      const done = run(b);
      await new Promise((r) => setTimeout(r, 2000));
      attach(b, format);
      const r = await done;
      cleanups.push(() => spawnSync("umount", [b.mount]));
      assert.equal(r.code, 0, r.stderr);
      assert.equal(mounted(b.mount), true);
      assert.match(readFileSync(b.fstab, "utf8"), new RegExp(`^UUID=[0-9a-f-]+ ${b.mount} ext4 defaults,nofail`, "m"));
      if (format === "retained") assert.equal(readFileSync(path.join(b.mount, "db.sqlite"), "utf8"), "previous node's database", "a retained volume is never formatted");
      const log = calls(b);
      assert.ok(log.includes(`enable --now ${HEADSCALE_UNIT}`), log.join("\n"));
      assert.equal(unitStartCheck(b.mount), 0);
    });
  }
});

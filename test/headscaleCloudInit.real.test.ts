import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import { renderHeadscaleConfig, renderHeadscalePolicy } from "../components/render/headscale";
import { generateSealingKeyPair } from "../components/render/headscaleBootstrap";
import { BOOTSTRAP_SCRIPT_PATH, renderHeadscaleCloudInit, type HeadscaleCloudInitInput } from "../components/render/headscaleCloudInit";
import { DEFAULT_IMAGES } from "../components/settings";
import { findTool, skipReason } from "./support/realTool";

// The control node's user data, judged by Debian's cloud-init and shellcheck.
const cloudInit = findTool("cloud-init", "cloud-init");
const shellcheck = findTool("shellcheck", "shellcheck");
const dir = mkdtempSync(path.join(tmpdir(), "hm-hs-cloudinit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const input = (derp: boolean): HeadscaleCloudInitInput => ({
  hostname: "hs",
  image: DEFAULT_IMAGES.headscale,
  configYaml: renderHeadscaleConfig({ serverFqdn: "hs.example.org", acmeEmail: "ops@example.org", acmeCa: "letsencrypt", derp }),
  policyHujson: renderHeadscalePolicy({ admins: ["alice@example.com"], nodeTag: "tag:hm-node", adminPorts: [22, 9443], sshUsers: ["root"] }),
  volumeName: "hm-prod-headscale",
  derp,
  bootstrap: { sealingPublicKeyPem: generateSealingKeyPair().publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 1800 },
});

for (const derp of [false, true]) {
  test(`control node user data (derp ${derp}) passes cloud-init schema`, { skip: cloudInit ? false : skipReason("cloud-init", "cloud-init") }, () => {
    const file = path.join(dir, `ud-${derp}.yaml`);
    writeFileSync(file, renderHeadscaleCloudInit(input(derp)));
    const r = spawnSync(cloudInit!, ["schema", "-c", file], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.match(`${r.stdout}${r.stderr}`, /Valid cloud-config/);
  });
}

test("the bootstrap script in the user data passes shellcheck", { skip: shellcheck ? false : skipReason("shellcheck", "shellcheck") }, () => {
  const doc = parse(renderHeadscaleCloudInit(input(false))) as { write_files: { path: string; content: string }[] };
  const script = doc.write_files.find((f) => f.path === BOOTSTRAP_SCRIPT_PATH)!.content;
  const file = path.join(dir, "bootstrap.sh");
  writeFileSync(file, script);
  const r = spawnSync(shellcheck!, ["-s", "sh", file], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout);
});

test("Headscale publishes 443 only (and 3478/udp with DERP); never metrics or gRPC; no SSH", () => {
  for (const derp of [false, true]) {
    const text = renderHeadscaleCloudInit(input(derp));
    const doc = parse(text) as { write_files: { path: string; content: string }[]; runcmd: (string | string[])[] };
    const unit = doc.write_files.find((f) => f.path.endsWith("/headscale.service"))!.content;
    const published = [...unit.matchAll(/--publish (\S+)/g)].map((m) => m[1]);
    assert.deepEqual(published, derp ? ["443:443/tcp", "3478:3478/udp"] : ["443:443/tcp"]);
    assert.doesNotMatch(unit, /9090|50443|--privileged/);
    assert.match(unit, /--read-only/);
    assert.match(unit, /--cap-drop ALL/);
    assert.ok(doc.runcmd.some((c) => [c].flat().join(" ") === "systemctl disable --now ssh.service"));
    assert.doesNotMatch(text, /hskey-(api|auth)-[A-Za-z0-9_-]{12}|PRIVATE KEY/, "no secret in the control node's user data");
  }
});

test("the control node takes Debian's security updates by itself, as APT reads its periodic settings", { skip: findTool("apt-config", "apt") ? false : skipReason("apt-config", "apt") }, () => {
  const doc = parse(renderHeadscaleCloudInit(input(false))) as { packages: string[]; write_files: { path: string; content: string; defer?: boolean }[] };
  assert.ok(doc.packages.includes("unattended-upgrades"));
  const auto = doc.write_files.find((f) => f.path === "/etc/apt/apt.conf.d/20auto-upgrades");
  assert.ok(auto, "no 20auto-upgrades");
  assert.equal(auto.defer, true, "written after the package, which would otherwise leave its own");
  const file = path.join(dir, "20auto-upgrades");
  writeFileSync(file, auto.content);
  const r = spawnSync("apt-config", ["-c", file, "dump", "APT::Periodic"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^APT::Periodic::Update-Package-Lists "1";$/m);
  assert.match(r.stdout, /^APT::Periodic::Unattended-Upgrade "1";$/m);
});

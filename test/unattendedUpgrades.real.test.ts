import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { renderCloudInit } from "../components/render/cloudInit";
import { findTool, skipReason } from "./support/realTool";

// Does a node's unattended-upgrades follow Tailscale's repository? Debian's own unattended-upgrades
// judges: its stock 50unattended-upgrades plus every apt.conf.d file our cloud-init writes, read by
// apt_pkg in apt's order, then its own get_allowed_origins() and is_allowed_origin() on origins
// built from Release files (Tailscale's says `Origin: Tailscale`, `Label: Tailscale`, `Codename: <codename>`).

const uu = findTool("unattended-upgrade", "unattended-upgrades");
const STOCK = "/usr/share/unattended-upgrades/50unattended-upgrades";
const PYTHON = "/usr/bin/python3"; // Debian's, which has python3-apt (a dependency of unattended-upgrades)

const JUDGE = String.raw`
import importlib.machinery, importlib.util, json, sys, types
import apt_pkg
loader = importlib.machinery.SourceFileLoader("unattended_upgrade", sys.argv[1])
spec = importlib.util.spec_from_loader("unattended_upgrade", loader)
uu = importlib.util.module_from_spec(spec)
loader.exec_module(uu)
apt_pkg.init_config()
apt_pkg.config.clear("Unattended-Upgrade")  # this machine's own settings play no part
for f in sys.argv[3:]:
    apt_pkg.read_config_file(apt_pkg.config, f)
uu.DISTRO_ID, uu.DISTRO_CODENAME = "Debian", "bookworm"  # a droplet's, whatever this machine runs
allowed = uu.get_allowed_origins()
out = {}
for case in json.loads(sys.argv[2]):
    release = apt_pkg.TagSection(case["release"])
    origin = types.SimpleNamespace(origin=release.get("Origin", ""), label=release.get("Label", ""), archive=release.get("Suite", ""),
                                   codename=release.get("Codename", ""), component="main", site=case["site"])
    out[case["name"]] = uu.is_allowed_origin(origin, allowed)
print(json.dumps({"allowed": allowed, "verdicts": out}))
`;

function judge(aptConfFiles: string[], site: string, codename: string): { allowed: string[]; verdicts: Record<string, boolean> } {
  const cases = [
    { name: "tailscale", site, release: `Origin: Tailscale\nLabel: Tailscale\nCodename: ${codename}\n` },
    { name: "debian-security", site: "deb.debian.org", release: "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: bookworm-security\n" },
    { name: "debian", site: "deb.debian.org", release: "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\n" },
    { name: "tailscale-elsewhere", site: "mirror.example.net", release: `Origin: Tailscale\nLabel: Tailscale\nCodename: ${codename}\n` },
    { name: "other-repository", site: "download.docker.com", release: "Origin: Docker\nLabel: Docker CE\nCodename: bookworm\n" },
  ];
  const r = spawnSync(PYTHON, ["-c", JUDGE, uu!, JSON.stringify(cases), ...aptConfFiles], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

const rendered = renderCloudInit({
  hostname: "hm-prod-1",
  tailscale: { authKey: "tskey-auth-x", tags: ["tag:hm-prod"], hostname: "hm-prod-1", ssh: true },
  wireguard: { port: 51820, fromCidr: "10.110.0.0/20" },
  volumes: [],
});
const doc = parse(rendered.replace(/^#cloud-config\n/, "")) as { write_files: Array<{ path: string; content: string }>; apt: { sources: Record<string, { source: string }> } };

test("unattended-upgrades, as configured on a node, upgrades tailscale from Tailscale's repository and keeps Debian's defaults", { skip: uu && existsSync(STOCK) ? false : skipReason("unattended-upgrade", "unattended-upgrades") }, () => {
  // The repository as the node's apt sees it: its host is the origin's `site`, its suite the codename.
  const m = /^deb \[[^\]]*\] https:\/\/([^/\s]+)\/\S* (\S+) main$/.exec(doc.apt.sources["tailscale.list"]!.source);
  assert.ok(m, doc.apt.sources["tailscale.list"]!.source);
  const [, site, codename] = m;
  // apt reads apt.conf.d in name order; the stock file is installed as 50unattended-upgrades.
  const dir = mkdtempSync(path.join(tmpdir(), "hm-uu-"));
  const ours = doc.write_files.filter((f) => path.posix.dirname(f.path) === "/etc/apt/apt.conf.d");
  const files = [{ name: "50unattended-upgrades", file: STOCK }, ...ours.map((f) => {
    const file = path.join(dir, path.posix.basename(f.path));
    writeFileSync(file, f.content);
    return { name: path.posix.basename(f.path), file };
  })].sort((a, b) => a.name.localeCompare(b.name)).map((f) => f.file);

  const before = judge([STOCK], site!, codename!);
  assert.equal(before.verdicts.tailscale, false, "Debian's defaults alone do not follow Tailscale's repository (the defect)");

  const { verdicts, allowed } = judge(files, site!, codename!);
  assert.deepEqual(verdicts, { tailscale: true, "debian-security": true, debian: true, "tailscale-elsewhere": false, "other-repository": false }, JSON.stringify(allowed));
  assert.deepEqual(allowed.slice(0, before.allowed.length), before.allowed, "Debian's default origins are kept, first");
});

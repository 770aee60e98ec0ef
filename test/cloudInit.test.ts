import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import {
  BOOTSTRAP_MARKER,
  DAEMON_JSON_PATH,
  DOCKER_DROPIN_PATH,
  METADATA_BLOCK_SCRIPT,
  METADATA_BLOCK_UNIT,
  PREPARE_VOLUME_SCRIPT,
  SSHD_DROPIN_PATH,
  TAILSCALE_AUTHKEY_FILE,
  TAILSCALE_KEY_FINGERPRINT,
  TAILSCALE_KEYRING,
  renderCloudInit,
  type CloudInitInput,
} from "../components/render/cloudInit";

// An auth key with characters YAML cares about, to prove it survives quoting intact.
const AUTH_KEY = "tskey-auth-kT3st:CNTRL#x'y\"z-0123456789abcdef";

const allRoles: CloudInitInput = {
  hostname: "hm-prod-1",
  tailscale: { authKey: AUTH_KEY, hostname: "hm-prod-1", tags: ["tag:hm-node", "tag:hm-manager"], ssh: true },
  volumes: [
    { name: "hm-prod-postgres", mountPoint: "/mnt/postgres", fsType: "ext4" },
    { name: "hm-prod-media", mountPoint: "/mnt/media", fsType: "xfs" },
    { name: "hm-prod-acme", mountPoint: "/mnt/acme", fsType: "ext4" },
    { name: "hm-prod-jetstream", mountPoint: "/mnt/jetstream", fsType: "ext4" },
  ],
  wireguard: { port: 51820, fromCidr: "10.110.0.0/24" },
  timezone: "Etc/UTC",
};
const noVolumes: CloudInitInput = { ...allRoles, hostname: "hm-prod-2", tailscale: { ...allRoles.tailscale, hostname: "hm-prod-2" }, volumes: [], wireguard: undefined };
const withAdmin: CloudInitInput = { ...allRoles, adminUser: "hmadmin", distro: "ubuntu-24.04" };

interface WriteFile {
  path: string;
  content: string;
  owner?: string;
  permissions?: string;
  defer?: boolean;
}
interface Doc {
  hostname: string;
  ssh_pwauth: boolean;
  users?: (string | Record<string, unknown>)[];
  bootcmd: (string | string[])[];
  apt: { preserve_sources_list?: boolean; sources: Record<string, { source: string }> };
  packages: string[];
  write_files: WriteFile[];
  runcmd: string[];
  [key: string]: unknown;
}

function render(c: CloudInitInput): { text: string; doc: Doc } {
  const text = renderCloudInit(c);
  return { text, doc: parse(text) as Doc };
}
function file(doc: Doc, path: string): WriteFile {
  const f = doc.write_files.find((w) => w.path === path);
  assert.ok(f, `no write_files entry for ${path}`);
  return f;
}
function occurrences(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

describe("cloud-init user data", () => {
  test("is a #cloud-config document", () => {
    const { text, doc } = render(allRoles);
    assert.ok(text.startsWith("#cloud-config\n"));
    assert.equal(doc.hostname, "hm-prod-1");
    assert.equal(doc.package_update, true);
    assert.equal(doc.package_upgrade, true);
  });

  test("strings YAML 1.1 would read as something else are quoted (cloud-init parses YAML 1.1)", () => {
    const { text, doc } = render({ ...allRoles, hostname: "on", tailscale: { ...allRoles.tailscale, hostname: "no" } });
    assert.match(text, /^hostname: "on"$/m);
    assert.equal(doc.hostname, "on");
  });

  test("daemon.json: no-new-privileges, rotated logs, no ICC, no userland proxy", () => {
    const daemon = JSON.parse(file(render(allRoles).doc, DAEMON_JSON_PATH).content) as Record<string, unknown>;
    assert.equal(daemon["no-new-privileges"], true);
    assert.equal(daemon["log-driver"], "local");
    assert.deepEqual(daemon["log-opts"], { "max-size": "10m", "max-file": "5" });
    assert.equal(daemon.icc, false);
    assert.equal(daemon["userland-proxy"], false);
  });

  test("daemon.json has no live-restore: dockerd refuses swarm mode with it", () => {
    // moby: "--live-restore daemon configuration is incompatible with swarm mode"
    const daemon = JSON.parse(file(render(allRoles).doc, DAEMON_JSON_PATH).content) as Record<string, unknown>;
    assert.equal("live-restore" in daemon, false);
  });

  test("containers are blocked from the metadata service on every bridge, persistently", () => {
    const { doc } = render(allRoles);
    const script = file(doc, METADATA_BLOCK_SCRIPT);
    assert.equal(script.permissions, "0755");
    assert.match(script.content, /iptables -w -I DOCKER-USER 1 -d 169\.254\.169\.254\/32 -j REJECT/);
    // No interface match: the rule must cover docker0, docker_gwbridge and user bridges alike.
    assert.doesNotMatch(script.content, / -i /);
    const unit = file(doc, `/etc/systemd/system/${METADATA_BLOCK_UNIT}`).content;
    assert.match(unit, /^After=docker\.service$/m);
    assert.match(unit, /^PartOf=docker\.service$/m);
    assert.match(unit, new RegExp(`^ExecStart=${METADATA_BLOCK_SCRIPT}$`, "m"));
    assert.match(unit, /^WantedBy=docker\.service$/m);
    assert.match(file(doc, DOCKER_DROPIN_PATH).content, new RegExp(`^Wants=${METADATA_BLOCK_UNIT}$`, "m"));
    assert.ok(doc.runcmd.includes(`systemctl enable --now ${METADATA_BLOCK_UNIT}`));
    assert.ok(doc.runcmd.includes("iptables -w -C DOCKER-USER -d 169.254.169.254/32 -j REJECT"), "bootstrap verifies the rule is in place");
  });

  test("sshd: keys only, no password or keyboard-interactive auth, logins only from the tailnet", () => {
    for (const c of [allRoles, withAdmin]) {
      const { doc, text } = render(c);
      assert.equal(doc.ssh_pwauth, false);
      const sshd = file(doc, SSHD_DROPIN_PATH).content;
      assert.match(sshd, /^PasswordAuthentication no$/m);
      assert.match(sshd, /^KbdInteractiveAuthentication no$/m);
      assert.match(sshd, /^PermitRootLogin (no|prohibit-password)$/m);
      assert.match(sshd, /^AllowUsers \*@100\.64\.0\.0\/10 \*@fd7a:115c:a1e0::\/48$/m);
      assert.doesNotMatch(text, /PasswordAuthentication yes|PermitRootLogin yes/);
      assert.ok(SSHD_DROPIN_PATH.startsWith("/etc/ssh/sshd_config.d/1"), "sorts before cloud-init's 50-cloud-init.conf");
    }
    assert.match(file(render(withAdmin).doc, SSHD_DROPIN_PATH).content, /^PermitRootLogin no$/m);
    assert.match(file(render(allRoles).doc, SSHD_DROPIN_PATH).content, /^PermitRootLogin prohibit-password$/m);
  });

  test("with Tailscale SSH, OpenSSH is masked only after the node has joined; without it, sshd is checked and kept", () => {
    const run = render(allRoles).doc.runcmd;
    const up = run.findIndex((l) => l.startsWith("tailscale up "));
    const mask = run.indexOf("systemctl mask ssh.service ssh.socket");
    assert.ok(up > 0 && mask > up);
    const noSsh = render({ ...allRoles, tailscale: { ...allRoles.tailscale, ssh: false } }).doc.runcmd;
    assert.equal(noSsh.some((l) => l.includes("mask ssh")), false);
    assert.ok(noSsh.includes("sshd -t"));
    assert.match(noSsh.find((l) => l.startsWith("tailscale up "))!, / --ssh=false /);
  });

  test("the admin user has passwordless sudo, a locked password and no password of any kind", () => {
    const users = render(withAdmin).doc.users!;
    const admin = users.find((u): u is Record<string, unknown> => typeof u === "object" && u.name === "hmadmin");
    assert.ok(admin);
    assert.equal(admin.sudo, "ALL=(ALL) NOPASSWD:ALL");
    assert.equal(admin.lock_passwd, true);
    for (const k of ["passwd", "hashed_passwd", "plain_text_passwd"]) assert.equal(k in admin, false);
    assert.equal(render(allRoles).doc.users, undefined);
  });

  test("the bootstrap stops at the first failure and writes the marker last, once", () => {
    const { doc, text } = render(allRoles);
    assert.equal(doc.runcmd[0], "set -eu");
    const last = doc.runcmd[doc.runcmd.length - 1];
    assert.ok(last.includes(`> ${BOOTSTRAP_MARKER}`), last);
    assert.equal(occurrences(text, BOOTSTRAP_MARKER), 1);
  });

  test("the auth key appears only in the root-only file on tmpfs, which is removed after joining", () => {
    const { doc, text } = render(allRoles);
    assert.equal(occurrences(text, "kT3st"), 1, "the raw text holds the key once");
    const strings: string[] = [];
    const walk = (v: unknown): void => {
      if (typeof v === "string") strings.push(v);
      else if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === "object") Object.values(v).forEach(walk);
    };
    walk(doc);
    assert.deepEqual(strings.filter((s) => s.includes(AUTH_KEY)), [`${AUTH_KEY}\n`], "nowhere but the key file");
    const keyFile = file(doc, TAILSCALE_AUTHKEY_FILE);
    assert.equal(keyFile.content.trim(), AUTH_KEY, "the key survives YAML quoting intact");
    assert.equal(keyFile.permissions, "0600");
    assert.equal(keyFile.owner, "root:root");
    assert.notEqual(keyFile.defer, true);
    assert.ok(TAILSCALE_AUTHKEY_FILE.startsWith("/run/"));
    const run = doc.runcmd;
    const up = run.findIndex((l) => l.startsWith("tailscale up "));
    assert.match(run[up], new RegExp(` --auth-key=file:${TAILSCALE_AUTHKEY_FILE} `));
    assert.equal(run[up + 1], `rm -f ${TAILSCALE_AUTHKEY_FILE}`);
    assert.equal(run[1], `trap 'rm -f ${TAILSCALE_AUTHKEY_FILE}' EXIT`, "removed even when a step fails");
  });

  test("tailscale up joins with the hostname, tags and a bounded wait", () => {
    const line = render(allRoles).doc.runcmd.find((l) => l.startsWith("tailscale up "))!;
    assert.match(line, / --hostname=hm-prod-1 /);
    assert.match(line, / --advertise-tags=tag:hm-node,tag:hm-manager /);
    assert.match(line, / --ssh=true /);
    assert.match(line, / --timeout=\d+s$/);
  });

  test("packages: distribution Docker, WireGuard tools, unattended upgrades, Tailscale from its own pinned repository", () => {
    for (const [c, path, codename] of [[allRoles, "debian", "bookworm"], [withAdmin, "ubuntu", "noble"]] as const) {
      const { doc } = render(c);
      for (const p of ["docker.io", "wireguard-tools", "unattended-upgrades", "tailscale"]) assert.ok(doc.packages.includes(p), p);
      assert.equal(doc.apt.preserve_sources_list, true);
      assert.equal(doc.apt.sources["tailscale.list"].source, `deb [signed-by=${TAILSCALE_KEYRING}] https://pkgs.tailscale.com/stable/${path} ${codename} main`);
      const fetch = doc.bootcmd.find((e) => Array.isArray(e) && e[0] === "python3") as string[];
      assert.ok(Array.isArray(fetch), "list form: cloud-init quotes every argument");
      assert.deepEqual(fetch.slice(3), [`https://pkgs.tailscale.com/stable/${path}/${codename}.noarmor.gpg`, TAILSCALE_KEY_FINGERPRINT, TAILSCALE_KEYRING]);
      assert.equal(fetch[0], "python3");
    }
    assert.ok(render(allRoles).doc.packages.includes("xfsprogs"), "an xfs volume needs mkfs.xfs");
    assert.equal(render(noVolumes).doc.packages.includes("xfsprogs"), false);
  });

  test("unattended security upgrades are switched on after the package is installed", () => {
    const auto = file(render(allRoles).doc, "/etc/apt/apt.conf.d/20auto-upgrades");
    assert.equal(auto.defer, true);
    assert.match(auto.content, /^APT::Periodic::Update-Package-Lists "1";$/m);
    assert.match(auto.content, /^APT::Periodic::Unattended-Upgrade "1";$/m);
  });

  test("each volume is prepared by its DigitalOcean device path, and Docker waits for the mounts", () => {
    const { doc } = render(allRoles);
    for (const v of allRoles.volumes) {
      assert.ok(doc.runcmd.includes(`${PREPARE_VOLUME_SCRIPT} /dev/disk/by-id/scsi-0DO_Volume_${v.name} ${v.mountPoint} ${v.fsType}`), v.name);
    }
    assert.match(file(doc, DOCKER_DROPIN_PATH).content, /^RequiresMountsFor=\/mnt\/postgres \/mnt\/media \/mnt\/acme \/mnt\/jetstream$/m);
    const script = file(doc, PREPARE_VOLUME_SCRIPT).content;
    assert.match(script, /nofail/);
    assert.match(script, /UUID=/);
    const empty = render(noVolumes).doc;
    assert.equal(empty.write_files.some((w) => w.path === PREPARE_VOLUME_SCRIPT), false);
    assert.equal(empty.runcmd.some((l) => l.includes(PREPARE_VOLUME_SCRIPT)), false);
    assert.doesNotMatch(file(empty, DOCKER_DROPIN_PATH).content, /RequiresMountsFor/);
  });

  test("the WireGuard port is opened in an active host firewall only when a mesh is configured", () => {
    assert.ok(render(allRoles).doc.runcmd.some((l) => l.includes("ufw allow proto udp from 10.110.0.0/24 to any port 51820;")));
    assert.equal(render(noVolumes).doc.runcmd.some((l) => l.includes("ufw")), false);
  });

  test("invalid input is refused with a clear message", () => {
    const bad = (patch: Partial<CloudInitInput>, message: RegExp): void => assert.throws(() => renderCloudInit({ ...allRoles, ...patch }), message);
    bad({ hostname: "Bad_Host" }, /hostname "Bad_Host" is not a DNS label/);
    bad({ tailscale: { ...allRoles.tailscale, tags: ["hm-node"] } }, /tag "hm-node" must look like tag:name/);
    bad({ tailscale: { ...allRoles.tailscale, tags: [] } }, /tags is empty/);
    bad({ tailscale: { ...allRoles.tailscale, authKey: "tskey\nrunme" } }, /authKey/);
    bad({ tailscale: { ...allRoles.tailscale, authKey: "" } }, /authKey/);
    bad({ tailscale: { ...allRoles.tailscale, hostname: "-x" } }, /tailscale.hostname/);
    bad({ volumes: [{ name: "data", mountPoint: "relative/path", fsType: "ext4" }] }, /absolute, normalized/);
    bad({ volumes: [{ name: "data", mountPoint: "/mnt/../etc", fsType: "ext4" }] }, /absolute, normalized/);
    bad({ volumes: [{ name: "data", mountPoint: "/etc", fsType: "ext4" }] }, /system directory/);
    bad({ volumes: [{ name: "Data_1", mountPoint: "/mnt/data", fsType: "ext4" }] }, /DigitalOcean's rules/);
    bad({ volumes: [{ name: "1data", mountPoint: "/mnt/data", fsType: "ext4" }] }, /DigitalOcean's rules/);
    bad({ volumes: [{ name: `a${"b".repeat(64)}`, mountPoint: "/mnt/data", fsType: "ext4" }] }, /DigitalOcean's rules/);
    bad({ volumes: [{ name: "a", mountPoint: "/mnt/a", fsType: "ext4" }, { name: "a", mountPoint: "/mnt/b", fsType: "ext4" }] }, /listed twice/);
    bad({ volumes: [{ name: "a", mountPoint: "/mnt/a", fsType: "ext4" }, { name: "b", mountPoint: "/mnt/a/b", fsType: "ext4" }] }, /overlaps/);
    bad({ adminUser: "root" }, /adminUser/);
    bad({ timezone: "Etc/UTC; rm -rf /" }, /timezone/);
    bad({ wireguard: { port: 0, fromCidr: "10.110.0.0/24" } }, /wireguard.port/);
    bad({ wireguard: { port: 51820, fromCidr: "anywhere" } }, /wireguard.fromCidr/);
    // Every problem at once.
    assert.throws(() => renderCloudInit({ ...allRoles, hostname: "A", adminUser: "root" }), (e: Error) => /hostname/.test(e.message) && /adminUser/.test(e.message));
  });
});

import { posix } from "node:path";
import { Document } from "yaml";

/** A DigitalOcean block volume; the droplet sees it as /dev/disk/by-id/scsi-0DO_Volume_<name>. */
export interface CloudInitVolume {
  name: string;
  mountPoint: string;
  fsType: "ext4" | "xfs";
}

export interface CloudInitInput {
  hostname: string;
  /** The auth key is a secret, so the whole user data is: keep it a secret output. */
  tailscale: {
    authKey: string;
    hostname: string;
    tags: string[];
    ssh: boolean;
    /** Headscale's URL (vpn: headscale). Its tag-only pre-auth key gives the node its tags, so none are advertised. */
    loginServer?: string;
  };
  volumes: CloudInitVolume[];
  /** Opens the WireGuard UDP port in a host firewall, if the image runs one (wg0.conf arrives later, over the VPN). */
  wireguard?: { port: number; /** Only peers from here (the VPC) may reach it. */ fromCidr: string };
  /** Optional non-root admin with passwordless sudo and a locked password (a Tailscale SSH target). */
  adminUser?: string;
  timezone?: string;
  /** The droplet image: debian-12-x64 (default) or ubuntu-24-04-x64. Picks Tailscale's apt repository. */
  distro?: "debian-12" | "ubuntu-24.04";
  /** Fixed gid of the `docker` group, created before Docker is installed (the socket proxy runs in it). */
  dockerGid?: number;
  /** Directories to create on the volumes once mounted, each handed to a service's "uid:gid". */
  directories?: Array<{ path: string; owner: string }>;
}

/** Written by the last bootstrap step only: its presence means every step before it succeeded. */
export const BOOTSTRAP_MARKER = "/var/lib/hardened-matrix/bootstrap-complete";

/** On /run (tmpfs): the auth key never reaches a disk, and it is removed once the node has joined. */
export const TAILSCALE_AUTHKEY_FILE = "/run/hardened-matrix/tailscale-authkey";

/**
 * Tailscale's package signing key (pkgs.tailscale.com), the same for every distribution.
 * Cross-checked in several independent projects that pin it; if Tailscale ever rotates it,
 * bootstrap fails loudly here instead of trusting a new key silently.
 */
export const TAILSCALE_KEY_FINGERPRINT = "2596A99EAAB33821893C0A79458CA832957F5868";
export const TAILSCALE_KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg";

export const DAEMON_JSON_PATH = "/etc/docker/daemon.json";
export const SSHD_DROPIN_PATH = "/etc/ssh/sshd_config.d/10-hardened-matrix.conf";
export const METADATA_BLOCK_SCRIPT = "/usr/local/sbin/hm-metadata-block";
export const METADATA_BLOCK_UNIT = "hm-metadata-block.service";
export const PREPARE_VOLUME_SCRIPT = "/usr/local/sbin/hm-prepare-volume";
export const DOCKER_DROPIN_PATH = "/etc/systemd/system/docker.service.d/10-hardened-matrix.conf";
export const METADATA_ADDRESS = "169.254.169.254";

/** Address ranges Tailscale (and Headscale by default) assigns to tailnet devices. */
export const TAILNET_RANGES = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"] as const;

const DISTROS = {
  "debian-12": { path: "debian", codename: "bookworm" },
  "ubuntu-24.04": { path: "ubuntu", codename: "noble" },
} as const;

export function volumeDevice(name: string): string {
  return `/dev/disk/by-id/scsi-0DO_Volume_${name}`;
}

/**
 * Docker daemon settings.
 * - No "live-restore": dockerd refuses swarm mode with it ("--live-restore daemon configuration is
 *   incompatible with swarm mode", moby daemon/config isSwarmCompatible).
 * - "icc": false only affects the default docker0 bridge; swarm overlays ignore it, and
 *   docker_gwbridge already has ICC off, so it is compatible with swarm.
 * - "local" log driver rotates and compresses by default; the limits make it explicit.
 */
export const DAEMON_JSON = Object.freeze({
  "no-new-privileges": true,
  "log-driver": "local",
  "log-opts": Object.freeze({ "max-size": "10m", "max-file": "5" }),
  icc: false,
  "userland-proxy": false,
});

// ---- validation ----------------------------------------------------------------------------

const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// tailcfg.CheckTag: "tag:" then a letter, then letters, digits, dashes.
const TAILSCALE_TAG = /^tag:[A-Za-z][A-Za-z0-9-]*$/;
// DigitalOcean: lowercase letters, digits and "-", starting with a letter, at most 64 characters.
const DO_VOLUME_NAME = /^[a-z][a-z0-9-]{0,63}$/;
const UNIX_USER = /^[a-z_][a-z0-9_-]{0,31}$/;
const TIMEZONE = /^[A-Za-z0-9_+-]+(\/[A-Za-z0-9_+-]+)*$/;
const RESERVED_MOUNTS = ["/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/lib/docker", "/mnt"];
const NO_MOUNT_UNDER = ["/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/usr", "/var/lib/docker"];

function validate(c: CloudInitInput): void {
  const problems: string[] = [];
  if (!DNS_LABEL.test(c.hostname)) problems.push(`hostname "${c.hostname}" is not a DNS label (lowercase letters, digits, inner "-", at most 63)`);
  const ts = c.tailscale;
  if (!DNS_LABEL.test(ts.hostname)) problems.push(`tailscale.hostname "${ts.hostname}" is not a DNS label`);
  if (!/[A-Za-z0-9]/.test(ts.authKey) || /\s/.test(ts.authKey)) problems.push("tailscale.authKey is empty or contains whitespace");
  if (ts.tags.length === 0) problems.push("tailscale.tags is empty; a server joins as a tagged device");
  if (ts.loginServer !== undefined && !/^https:\/\/[a-z0-9.-]+$/.test(ts.loginServer)) problems.push(`tailscale.loginServer "${ts.loginServer}" must be https://<host>`);
  for (const tag of ts.tags) {
    if (!TAILSCALE_TAG.test(tag)) problems.push(`tailscale tag "${tag}" must look like tag:name (start with "tag:", then a letter, letters, digits, "-")`);
  }
  const names = new Set<string>();
  const mounts: string[] = [];
  for (const v of c.volumes) {
    if (!DO_VOLUME_NAME.test(v.name)) problems.push(`volume name "${v.name}" breaks DigitalOcean's rules (lowercase letters, digits, "-", starts with a letter, at most 64)`);
    if (names.has(v.name)) problems.push(`volume name "${v.name}" is listed twice`);
    names.add(v.name);
    const mp = v.mountPoint;
    if (!/^(\/[A-Za-z0-9._-]+)+$/.test(mp) || posix.normalize(mp) !== mp || mp.split("/").some((s) => s === "." || s === "..")) {
      problems.push(`volume "${v.name}": mount point "${mp}" must be an absolute, normalized path of [A-Za-z0-9._-] segments`);
    } else if (RESERVED_MOUNTS.includes(mp) || NO_MOUNT_UNDER.some((d) => mp.startsWith(`${d}/`))) {
      problems.push(`volume "${v.name}": mount point "${mp}" is a system directory`);
    }
    for (const other of mounts) {
      if (other === mp || other.startsWith(`${mp}/`) || mp.startsWith(`${other}/`)) problems.push(`volume "${v.name}": mount point "${mp}" overlaps "${other}"`);
    }
    mounts.push(mp);
    if (v.fsType !== "ext4" && v.fsType !== "xfs") problems.push(`volume "${v.name}": fsType "${String(v.fsType)}" is not ext4 or xfs`);
  }
  if (c.wireguard && !(Number.isInteger(c.wireguard.port) && c.wireguard.port >= 1 && c.wireguard.port <= 65535)) {
    problems.push(`wireguard.port ${c.wireguard.port} is not a port number`);
  }
  if (c.wireguard && !/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(c.wireguard.fromCidr)) problems.push(`wireguard.fromCidr "${c.wireguard.fromCidr}" is not an IPv4 CIDR`);
  if (c.adminUser !== undefined && (!UNIX_USER.test(c.adminUser) || c.adminUser === "root")) {
    problems.push(`adminUser "${c.adminUser}" is not a valid non-root user name`);
  }
  if (c.timezone !== undefined && !TIMEZONE.test(c.timezone)) problems.push(`timezone "${c.timezone}" is not a zone name like Etc/UTC`);
  if (c.distro !== undefined && !(c.distro in DISTROS)) problems.push(`distro "${String(c.distro)}" is not one of ${Object.keys(DISTROS).join(", ")}`);
  if (c.dockerGid !== undefined && !(Number.isInteger(c.dockerGid) && c.dockerGid >= 1 && c.dockerGid <= 65535)) {
    problems.push(`dockerGid ${c.dockerGid} is not a group id (1-65535)`);
  }
  for (const d of c.directories ?? []) {
    const onVolume = c.volumes.some((v) => d.path.startsWith(`${v.mountPoint}/`));
    if (!/^(\/[A-Za-z0-9._-]+)+$/.test(d.path) || posix.normalize(d.path) !== d.path || !onVolume) {
      problems.push(`directory "${d.path}" must be a normalized path under one of the volumes' mount points`);
    }
    if (!/^\d{1,5}:\d{1,5}$/.test(d.owner)) problems.push(`directory "${d.path}": owner "${d.owner}" is not uid:gid`);
  }
  if (problems.length > 0) throw new Error(`invalid cloud-init input:\n  - ${problems.join("\n  - ")}`);
}

// ---- scripts -------------------------------------------------------------------------------

/**
 * Fetches Tailscale's keyring over HTTPS (Tailscale's documented install path), and installs it
 * only if it holds exactly one primary key with the pinned fingerprint. An existing keyring that
 * passes the pin is kept, so later boots need no network. python3 is there because cloud-init
 * needs it; curl and gpg are not guaranteed on every image. Arguments: URL FINGERPRINT DEST.
 */
export const FETCH_PINNED_KEY_PY = `import hashlib, os, sys, time, urllib.request
url, want, dest = sys.argv[1:4]
def primary_fingerprints(data):
    fprs, i = [], 0
    while i < len(data):
        h = data[i]
        if h & 0xC0 == 0xC0:
            tag, l = h & 0x3F, data[i + 1]
            if l < 192: n, o = l, 2
            elif l < 224: n, o = ((l - 192) << 8) + data[i + 2] + 192, 3
            elif l == 255: n, o = int.from_bytes(data[i + 2:i + 6], "big"), 6
            else: raise ValueError("partial packet lengths are not used in keyrings")
        elif h & 0x80:
            tag, lt = (h >> 2) & 0x0F, h & 3
            if lt == 3: raise ValueError("indeterminate packet length")
            n, o = int.from_bytes(data[i + 1:i + 1 + (1 << lt)], "big"), 1 + (1 << lt)
        else:
            raise ValueError("not a binary OpenPGP keyring")
        body = data[i + o:i + o + n]
        if len(body) != n: raise ValueError("truncated packet")
        if tag == 6:
            if body[0] != 4: raise ValueError("only v4 keys are expected")
            fprs.append(hashlib.sha1(b"\\x99" + n.to_bytes(2, "big") + body).hexdigest().upper())
        i += o + n
    return fprs
def pinned(data):
    try: return primary_fingerprints(data) == [want]
    except (ValueError, IndexError): return False
if os.path.exists(dest) and pinned(open(dest, "rb").read()): sys.exit(0)
err = None
for attempt in range(6):
    try:
        data = urllib.request.urlopen(url, timeout=30).read()
        break
    except OSError as e:
        err = e
        time.sleep(5 * (attempt + 1))
else:
    sys.exit("fetching %s failed: %s" % (url, err))
if not pinned(data): sys.exit("%s does not hold exactly the pinned key %s" % (url, want))
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".tmp", "wb") as f: f.write(data)
os.chmod(dest + ".tmp", 0o644)
os.replace(dest + ".tmp", dest)
`;

/**
 * DOCKER-USER is jumped to from FORWARD before Docker's own accept rules, and every container
 * packet leaving for another address passes FORWARD: docker0, docker_gwbridge (swarm tasks'
 * way out) and user bridges alike. So one rule without an interface match covers them all.
 */
export const METADATA_BLOCK_SH = `#!/bin/sh
# Containers must not read the droplet's user data (it holds secrets) from the metadata service.
set -eu
iptables -w -N DOCKER-USER 2>/dev/null || true
iptables -w -C DOCKER-USER -d ${METADATA_ADDRESS}/32 -j REJECT 2>/dev/null ||
  iptables -w -I DOCKER-USER 1 -d ${METADATA_ADDRESS}/32 -j REJECT
`;

const METADATA_BLOCK_UNIT_TEXT = `[Unit]
Description=Block containers from the cloud metadata service (${METADATA_ADDRESS})
After=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${METADATA_BLOCK_SCRIPT}

[Install]
WantedBy=docker.service
`;

/**
 * Formats a volume only when it holds no signature at all (blkid -p exit 2), never otherwise,
 * then mounts it by UUID with nofail. A script rather than cloud-init's fs_setup/mounts: a
 * VolumeAttachment can land after cloud-init's early disk stage, so this waits for the device.
 * Usage: hm-prepare-volume DEVICE MOUNTPOINT FSTYPE [FSTAB] [WAIT_SECONDS]
 */
export const PREPARE_VOLUME_SH = `#!/bin/sh
set -eu
dev=$1 mp=$2 fs=$3 fstab=\${4:-/etc/fstab} wait=\${5:-600}
case $fs in ext4|xfs) ;; *) echo "unsupported filesystem $fs" >&2; exit 1 ;; esac
waited=0
while [ ! -e "$dev" ]; do
  if [ "$waited" -ge "$wait" ]; then echo "$dev did not appear within \${wait}s" >&2; exit 1; fi
  sleep 5
  waited=$((waited + 5))
done
if command -v udevadm >/dev/null 2>&1; then udevadm settle --timeout=30 || true; fi
rc=0
blkid -p "$dev" >/dev/null 2>&1 || rc=$?
case $rc in
  0) ;;
  2) echo "$dev holds no filesystem: creating $fs"; "mkfs.$fs" -q "$dev" ;;
  *) echo "blkid could not probe $dev (exit $rc): refusing to format" >&2; exit 1 ;;
esac
found=$(blkid -p -s TYPE -o value "$dev" || true)
if [ "$found" != "$fs" ]; then
  echo "$dev holds '\${found:-something else}', not $fs: leaving it untouched and unmounted" >&2
  exit 1
fi
uuid=$(blkid -p -s UUID -o value "$dev")
[ -n "$uuid" ] || { echo "$dev has no filesystem UUID" >&2; exit 1; }
pass=2
[ "$fs" = ext4 ] || pass=0
mkdir -p "$mp"
if ! grep -Eq "^UUID=\${uuid}[[:space:]]" "$fstab"; then
  printf 'UUID=%s %s %s defaults,nofail,noatime,nodev,nosuid,x-systemd.device-timeout=30s 0 %s\\n' "$uuid" "$mp" "$fs" "$pass" >>"$fstab"
fi
mountpoint -q "$mp" || mount -T "$fstab" "$mp"
mountpoint -q "$mp" || { echo "$mp is not mounted" >&2; exit 1; }
`;

function sshdDropin(c: CloudInitInput): string {
  // With a non-root admin there is no reason for root logins over OpenSSH at all.
  const rootLogin = c.adminUser ? "no" : "prohibit-password";
  return [
    "# hardened-matrix: read before the distribution's settings (the first value wins).",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitEmptyPasswords no",
    "PubkeyAuthentication yes",
    `PermitRootLogin ${rootLogin}`,
    "X11Forwarding no",
    "AllowAgentForwarding no",
    "MaxAuthTries 3",
    // sshd still binds every address (it can never fail to start because tailscale0 is not up
    // yet), but only accepts logins from tailnet addresses.
    `AllowUsers ${TAILNET_RANGES.map((r) => `*@${r}`).join(" ")}`,
    "",
  ].join("\n");
}

function dockerDropin(c: CloudInitInput): string {
  const lines = ["[Unit]", `Wants=${METADATA_BLOCK_UNIT}`];
  // Containers must never start on an empty mount point directory of the root disk.
  if (c.volumes.length > 0) lines.push(`RequiresMountsFor=${c.volumes.map((v) => v.mountPoint).join(" ")}`);
  return `${lines.join("\n")}\n`;
}

export const AUTO_UPGRADES_PATH = "/etc/apt/apt.conf.d/20auto-upgrades";
export const AUTO_UPGRADES = `APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
`;

/**
 * unattended-upgrades follows Debian's own origins only (its 50unattended-upgrades): tailscaled on
 * the admin path would stay at its first-boot version. Tailscale's repository's Release file says
 * `Origin: Tailscale` (pkgs.tailscale.com/stable/<distro>/dists/<codename>/Release, as quoted by public
 * configs that allow it); `site=` ties the pattern to the repository added below, whatever else
 * claims that origin. apt.conf lists add up across files, so Debian's defaults stay. Judged by
 * unattended-upgrades' own matcher in test/unattendedUpgrades.real.test.ts.
 */
export const TAILSCALE_UPGRADES_PATH = "/etc/apt/apt.conf.d/51hardened-matrix-tailscale";
const TAILSCALE_UPGRADES = `Unattended-Upgrade::Origins-Pattern {
        "origin=Tailscale,site=pkgs.tailscale.com";
};
`;

/**
 * Creates the `docker` group with the gid the socket proxy is given, before docker.io is installed
 * (its postinst runs `addgroup --system docker` only if the group is missing; docker.socket has
 * SocketGroup=docker: Debian 12 docker.io 20.10.24+dfsg1-1+deb12u1). Fails loudly, never
 * silently, if the gid is taken (groupadd exits 4) or the group exists with another gid.
 */
export function dockerGroupScript(gid: number): string {
  return [
    `want=${gid}`,
    "have=$(getent group docker | cut -d: -f3)",
    "if [ -z \"$have\" ]; then",
    "  groupadd --system --gid \"$want\" docker || { echo \"hardened-matrix: cannot create group docker with gid $want (dockerSocketGid)\" >&2; exit 1; }",
    "elif [ \"$have\" != \"$want\" ]; then",
    "  echo \"hardened-matrix: group docker has gid $have, not $want (dockerSocketGid)\" >&2",
    "  exit 1",
    "fi",
    "",
  ].join("\n");
}

/** The bootstrap's check that Docker's socket is in the group the socket proxy runs in. */
export function dockerSocketCheck(gid: number): string {
  return `if ! sock_gid=$(stat -c %g /var/run/docker.sock) || [ "$sock_gid" != ${gid} ]; then echo "hardened-matrix: /var/run/docker.sock is not in group ${gid} (dockerSocketGid; found: \${sock_gid:-no socket}): the socket proxy could not use it" >&2; exit 1; fi`;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---- document ------------------------------------------------------------------------------

export function renderCloudInit(c: CloudInitInput): string {
  validate(c);
  const distro = DISTROS[c.distro ?? "debian-12"];
  const repo = `https://pkgs.tailscale.com/stable/${distro.path}`;
  const ts = c.tailscale;

  const packages = [
    // Debian's/Ubuntu's own Docker: signed by the distribution key already trusted, patched by the
    // security archive that unattended-upgrades follows by default, no second third-party repo.
    // Cost: Debian 12 ships Engine 20.10 (maintained by Debian), which has all that is used here.
    "docker.io",
    "wireguard-tools",
    "unattended-upgrades",
    // apt-listchanges is left out: it mails changelogs, and the nodes run no mail system.
    "tailscale",
  ];
  if (c.volumes.some((v) => v.fsType === "xfs")) packages.push("xfsprogs");

  const writeFiles: Record<string, unknown>[] = [
    { path: DAEMON_JSON_PATH, owner: "root:root", permissions: "0644", content: `${JSON.stringify(DAEMON_JSON, null, 2)}\n` },
    { path: METADATA_BLOCK_SCRIPT, owner: "root:root", permissions: "0755", content: METADATA_BLOCK_SH },
    { path: `/etc/systemd/system/${METADATA_BLOCK_UNIT}`, owner: "root:root", permissions: "0644", content: METADATA_BLOCK_UNIT_TEXT },
    { path: DOCKER_DROPIN_PATH, owner: "root:root", permissions: "0644", content: dockerDropin(c) },
    { path: SSHD_DROPIN_PATH, owner: "root:root", permissions: "0644", content: sshdDropin(c) },
    { path: TAILSCALE_AUTHKEY_FILE, owner: "root:root", permissions: "0600", content: `${ts.authKey}\n` },
  ];
  if (c.volumes.length > 0) {
    writeFiles.push({ path: PREPARE_VOLUME_SCRIPT, owner: "root:root", permissions: "0755", content: PREPARE_VOLUME_SH });
  }
  // Deferred until the packages are installed, so unattended-upgrades' own setup cannot replace it.
  writeFiles.push({ path: AUTO_UPGRADES_PATH, owner: "root:root", permissions: "0644", content: AUTO_UPGRADES, defer: true });
  writeFiles.push({ path: TAILSCALE_UPGRADES_PATH, owner: "root:root", permissions: "0644", content: TAILSCALE_UPGRADES });

  const runcmd: string[] = [
    // cloud-init runs these lines as one sh script without -e: without this, a failed step
    // would still let the marker be written.
    "set -eu",
    `trap 'rm -f ${TAILSCALE_AUTHKEY_FILE}' EXIT`,
    "systemctl daemon-reload",
    `systemctl enable --now ${METADATA_BLOCK_UNIT}`,
    `iptables -w -C DOCKER-USER -d ${METADATA_ADDRESS}/32 -j REJECT`,
  ];
  for (const v of c.volumes) {
    runcmd.push(`${PREPARE_VOLUME_SCRIPT} ${volumeDevice(v.name)} ${v.mountPoint} ${v.fsType}`);
  }
  if (c.volumes.length > 0) runcmd.push("systemctl daemon-reload");
  for (const d of c.directories ?? []) {
    const [uid, gid] = d.owner.split(":");
    runcmd.push(`install -d -m 0700 -o ${uid} -g ${gid} ${d.path}`);
  }
  if (c.wireguard) {
    // DigitalOcean's images run no host firewall by default; if ufw is active, open the port.
    runcmd.push(`if command -v ufw >/dev/null 2>&1 && ufw status | grep -q '^Status: active'; then ufw allow proto udp from ${c.wireguard.fromCidr} to any port ${c.wireguard.port}; fi`);
  }
  const up = [
    "tailscale up",
    `--auth-key=file:${TAILSCALE_AUTHKEY_FILE}`,
    `--hostname=${ts.hostname}`,
    ...(ts.loginServer ? [`--login-server=${ts.loginServer}`] : [`--advertise-tags=${ts.tags.join(",")}`]),
    `--ssh=${ts.ssh}`,
    "--timeout=300s",
  ];
  runcmd.push(up.join(" "), `rm -f ${TAILSCALE_AUTHKEY_FILE}`);
  if (ts.ssh) {
    // Tailscale SSH answers port 22 on the tailnet address without binding anything, so it cannot
    // fail to start; OpenSSH would only be a second daemon to patch: mask it once the node has joined.
    runcmd.push(
      "systemctl mask ssh.service ssh.socket",
      "systemctl stop ssh.socket ssh.service 2>/dev/null || true",
      "if systemctl is-active --quiet ssh.service || systemctl is-active --quiet ssh.socket; then echo 'OpenSSH is still running' >&2; exit 1; fi",
    );
  } else {
    runcmd.push("sshd -t", "systemctl try-restart ssh.service");
  }
  // The swarm is formed afterwards, over the WireGuard mesh, by the program (components/platform/swarm.ts).
  if (c.dockerGid !== undefined) runcmd.push(dockerSocketCheck(c.dockerGid));
  runcmd.push(`mkdir -p ${shellQuote(posix.dirname(BOOTSTRAP_MARKER))}`, `date -u +%Y-%m-%dT%H:%M:%SZ > ${shellQuote(BOOTSTRAP_MARKER)}`);

  const config: Record<string, unknown> = {
    hostname: c.hostname,
    ...(c.timezone ? { timezone: c.timezone } : {}),
    ssh_pwauth: false,
    ...(c.adminUser
      ? {
          users: [
            "default",
            { name: c.adminUser, groups: ["sudo"], shell: "/bin/bash", sudo: "ALL=(ALL) NOPASSWD:ALL", lock_passwd: true },
          ],
        }
      : {}),
    // The keyring must exist before apt-configure runs `apt-get update`; bootcmd is the only
    // stage that runs earlier (its list form is quoted by cloud-init, so the code is passed as is).
    // cloud-init runs bootcmd (on every boot) as one sh script without -e: with it, a failing step
    // fails the module (`cloud-init status` reports it) instead of passing unnoticed.
    bootcmd: [
      "set -eu",
      ["python3", "-c", FETCH_PINNED_KEY_PY, `${repo}/${distro.codename}.noarmor.gpg`, TAILSCALE_KEY_FINGERPRINT, TAILSCALE_KEYRING],
      // After the keyring, so a taken gid still leaves the node reachable over the tailnet to fix it.
      ...(c.dockerGid !== undefined ? [["sh", "-c", dockerGroupScript(c.dockerGid)]] : []),
    ],
    apt: {
      // Leave the image's own archive configuration alone; only add Tailscale's repository.
      preserve_sources_list: true,
      sources: {
        "tailscale.list": { source: `deb [signed-by=${TAILSCALE_KEYRING}] ${repo} ${distro.codename} main` },
      },
    },
    package_update: true,
    package_upgrade: true,
    packages,
    write_files: writeFiles,
    runcmd,
  };

  // cloud-init reads YAML 1.1 (PyYAML): serializing as 1.1 quotes every string 1.1 would turn into
  // something else (a hostname "on" or "no" would become a boolean, "1:30" a number).
  const doc = new Document(config, { version: "1.1" });
  return `#cloud-config\n${doc.toString({ lineWidth: 0 })}`;
}

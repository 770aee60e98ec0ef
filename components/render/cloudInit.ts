import { stringify } from "yaml";

/** Written when the bootstrap has finished; later steps wait for it. */
export const BOOTSTRAP_MARKER = "/var/lib/hardened-matrix/bootstrap-done";
export const BOOTSTRAP_SCRIPT = "/usr/local/sbin/hardened-matrix-bootstrap";
export const TAILSCALE_KEY_FILE = "/etc/hardened-matrix/tailscale-authkey";
export const METADATA_ADDRESS = "169.254.169.254";

export interface CloudInitVolume {
  /** ext4 label of the block-storage volume. */
  label: string;
  mountPoint: string;
  /** Directories to create on the volume, each handed to its service's "uid:gid". */
  directories: Array<{ path: string; owner: string }>;
}

export interface CloudInitInput {
  hostname: string;
  /** Fixed gid of the docker group, created before Docker is installed (the socket proxy runs in it). */
  dockerSocketGid: number;
  tailscale: { authKey: string; tags: string[]; hostname: string };
  volumes: CloudInitVolume[];
  /** Only on a single-node stack: the node becomes its own swarm on its VPC address. */
  swarm?: { addressPool: string; labels: string[] };
}

// Docker refuses to start swarm mode with live-restore, so it is left off on these nodes.
export const DAEMON_JSON = {
  "no-new-privileges": true,
  "log-driver": "json-file",
  "log-opts": { "max-size": "10m", "max-file": "3" },
  icc: false,
  "userland-proxy": false,
};

const SSHD_CONFIG = [
  "# hardened-matrix: admins use Tailscale SSH over the tailnet; sshd serves loopback only (break-glass console).",
  "ListenAddress 127.0.0.1",
  "PasswordAuthentication no",
  "KbdInteractiveAuthentication no",
  "PermitRootLogin prohibit-password",
  "X11Forwarding no",
  "",
].join("\n");

const AUTO_UPGRADES = ['APT::Periodic::Update-Package-Lists "1";', 'APT::Periodic::Unattended-Upgrade "1";', ""].join("\n");

// Containers must not read the droplet's metadata (it serves the user data with the join key).
const METADATA_BLOCK_UNIT = [
  "[Unit]",
  "Description=Block container access to the cloud metadata service",
  "After=docker.service",
  "Requires=docker.service",
  "",
  "[Service]",
  "Type=oneshot",
  "RemainAfterExit=yes",
  `ExecStart=/bin/sh -c 'iptables -C DOCKER-USER -d ${METADATA_ADDRESS}/32 -j DROP 2>/dev/null || iptables -I DOCKER-USER 1 -d ${METADATA_ADDRESS}/32 -j DROP'`,
  "",
  "[Install]",
  "WantedBy=multi-user.target",
  "",
].join("\n");

const shellWord = /^[A-Za-z0-9_.,:/=@+-]+$/;
function word(value: string): string {
  if (!shellWord.test(value)) throw new Error(`unsafe value for the bootstrap script: ${JSON.stringify(value)}`);
  return value;
}

function bootstrapScript(input: CloudInitInput): string {
  const lines = [
    "#!/bin/sh",
    "# Runs once, at first boot. Day-2 changes do not come through here (user data is ignored after creation).",
    "set -eu",
    "export DEBIAN_FRONTEND=noninteractive",
    "",
    "# The docker group first, with the gid the socket proxy is given.",
    `getent group docker >/dev/null || groupadd --system --gid ${input.dockerSocketGid} docker`,
    "",
    "install -d -m 0755 /etc/apt/keyrings",
    "curl -fsSL https://download.docker.com/linux/debian/gpg -o /etc/apt/keyrings/docker.asc",
    'echo "deb [signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian $(. /etc/os-release && echo $VERSION_CODENAME) stable" > /etc/apt/sources.list.d/docker.list',
    'curl -fsSL "https://pkgs.tailscale.com/stable/debian/$(. /etc/os-release && echo $VERSION_CODENAME).noarmor.gpg" -o /usr/share/keyrings/tailscale-archive-keyring.gpg',
    'echo "deb [signed-by=/usr/share/keyrings/tailscale-archive-keyring.gpg] https://pkgs.tailscale.com/stable/debian $(. /etc/os-release && echo $VERSION_CODENAME) main" > /etc/apt/sources.list.d/tailscale.list',
    "apt-get update",
    "apt-get install -y docker-ce docker-ce-cli containerd.io tailscale",
    "systemctl enable --now docker",
    "systemctl enable --now hardened-matrix-metadata-block.service",
    "",
    "# Join the tailnet; the key file goes away once used.",
    `tailscale up --auth-key=file:${TAILSCALE_KEY_FILE} --hostname=${word(input.tailscale.hostname)} --advertise-tags=${input.tailscale.tags.map(word).join(",")} --ssh`,
    `rm -f ${TAILSCALE_KEY_FILE}`,
    "",
  ];
  for (const v of input.volumes) {
    const device = `/dev/disk/by-label/${word(v.label)}`;
    lines.push(
      `# Volume ${v.label}: attached after the droplet exists, so wait for it (10 minutes at most).`,
      `i=0; while [ ! -e ${device} ]; do i=$((i+1)); [ $i -le 120 ] || { echo "volume ${v.label} never appeared" >&2; exit 1; }; sleep 5; done`,
      `install -d -m 0755 ${word(v.mountPoint)}`,
      `mountpoint -q ${v.mountPoint} || mount ${v.mountPoint}`,
    );
    for (const d of v.directories) {
      if (!d.path.startsWith(`${v.mountPoint}/`)) throw new Error(`${d.path} is not on the volume mounted at ${v.mountPoint}`);
      if (!/^\d+:\d+$/.test(d.owner)) throw new Error(`owner ${d.owner} is not uid:gid`);
      lines.push(`install -d -m 0700 -o ${d.owner.split(":")[0]} -g ${d.owner.split(":")[1]} ${word(d.path)}`);
    }
    lines.push("");
  }
  if (input.swarm) {
    const labels = input.swarm.labels.map((l) => `--label-add ${word(l)}`).join(" ");
    lines.push(
      "# A single node is its own swarm, on its VPC address (never the public one).",
      `private=$(curl -fsS http://${METADATA_ADDRESS}/metadata/v1/interfaces/private/0/ipv4/address)`,
      "if [ \"$(docker info --format '{{.Swarm.LocalNodeState}}')\" = inactive ]; then",
      `  docker swarm init --advertise-addr "$private" --listen-addr "$private:2377" --data-path-addr "$private" --default-addr-pool ${word(input.swarm.addressPool)}`,
      "fi",
      `docker node update ${labels} "$(docker info --format '{{.Swarm.NodeID}}')"`,
      "",
    );
  }
  lines.push(`install -d -m 0755 ${BOOTSTRAP_MARKER.slice(0, BOOTSTRAP_MARKER.lastIndexOf("/"))}`, `date -u +%Y-%m-%dT%H:%M:%SZ > ${BOOTSTRAP_MARKER}`, "");
  return lines.join("\n");
}

/** The user data of one node (#cloud-config). It carries the tailnet join key: keep it secret. */
export function renderCloudInit(input: CloudInitInput): string {
  word(input.hostname);
  const doc = {
    hostname: input.hostname,
    preserve_hostname: false,
    ssh_pwauth: false,
    disable_root: false,
    package_update: true,
    package_upgrade: true,
    packages: ["ca-certificates", "curl", "gnupg", "iptables", "wireguard-tools", "unattended-upgrades", "apt-listchanges"],
    // cloud-init refuses an empty list: no key at all for a node without volumes.
    mounts: input.volumes.length === 0 ? undefined : input.volumes.map((v) => [`LABEL=${v.label}`, v.mountPoint, "ext4", "defaults,nofail,noatime,discard,x-systemd.device-timeout=600", "0", "2"]),
    write_files: [
      { path: "/etc/docker/daemon.json", permissions: "0644", content: `${JSON.stringify(DAEMON_JSON, null, 2)}\n` },
      { path: "/etc/ssh/sshd_config.d/10-hardened-matrix.conf", permissions: "0644", content: SSHD_CONFIG },
      { path: "/etc/apt/apt.conf.d/20auto-upgrades", permissions: "0644", content: AUTO_UPGRADES },
      { path: "/etc/systemd/system/hardened-matrix-metadata-block.service", permissions: "0644", content: METADATA_BLOCK_UNIT },
      { path: TAILSCALE_KEY_FILE, permissions: "0600", content: `${input.tailscale.authKey}\n` },
      { path: BOOTSTRAP_SCRIPT, permissions: "0700", content: bootstrapScript(input) },
    ],
    runcmd: [["systemctl", "restart", "ssh"], [BOOTSTRAP_SCRIPT]],
  };
  return `#cloud-config\n${stringify(doc, { lineWidth: 0 })}`;
}

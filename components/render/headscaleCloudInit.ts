import { Document } from "yaml";
import { HEADSCALE_CONFIG_DIR, HEADSCALE_PORTS, HEADSCALE_STATE_DIR } from "./headscale";
import { renderBootstrapScript, type BootstrapScriptInput } from "./headscaleBootstrap";
import { AUTO_UPGRADES, AUTO_UPGRADES_PATH, PREPARE_VOLUME_SCRIPT, PREPARE_VOLUME_SH, volumeDevice } from "./cloudInit";

/**
 * User data of the Headscale control node: Headscale starts from first boot under systemd (not
 * from the swarm, which needs the VPN first), its state on a retained volume, then the bootstrap
 * hands the sealed API key over. Nothing here is secret (the sealing key is public), so the node
 * needs no secret in its user data at all.
 */
export interface HeadscaleCloudInitInput {
  hostname: string;
  image: string;
  configYaml: string;
  policyHujson: string;
  /** DigitalOcean volume name holding Headscale's database and noise key. */
  volumeName: string;
  derp: boolean;
  bootstrap: Omit<BootstrapScriptInput, "bindAddress" | "port" | "stateDir">;
}

export const STATE_MOUNT = "/mnt/headscale-state";
/** How long first boot waits for the state volume's attachment (it is made after the droplet). */
export const STATE_VOLUME_WAIT_SECONDS = 900;
export const BOOTSTRAP_SCRIPT_PATH = "/usr/local/sbin/hm-headscale-bootstrap";
export const BOOTSTRAP_STATE_DIR = "/var/lib/hm-headscale-bootstrap";
export const HEADSCALE_UNIT = "headscale.service";
export const BOOTSTRAP_UNIT = "hm-headscale-bootstrap.service";

/** Fails unless the state directory is a mount point (util-linux mountpoint(1)). */
export const STATE_MOUNT_CHECK = `/usr/bin/mountpoint -q ${STATE_MOUNT}`;

/**
 * docker run as upstream documents it (juanfont/headscale v0.29.2 docs/setup/install/container.md:
 * --read-only, --tmpfs /var/run/headscale, config read-only, `serve`), with every capability dropped
 * but binding 443. Metrics (9090) and gRPC (50443) are not published: they bind the container's loopback.
 */
export function headscaleUnit(image: string, derp: boolean): string {
  const run = [
    "/usr/bin/docker run --rm --name headscale",
    "--read-only --tmpfs /var/run/headscale",
    "--cap-drop ALL --cap-add NET_BIND_SERVICE --security-opt no-new-privileges",
    `--volume ${HEADSCALE_CONFIG_DIR}:${HEADSCALE_CONFIG_DIR}:ro`,
    `--volume ${STATE_MOUNT}:${HEADSCALE_STATE_DIR}`,
    `--publish ${HEADSCALE_PORTS.https}:${HEADSCALE_PORTS.https}/tcp`,
    ...(derp ? [`--publish ${HEADSCALE_PORTS.stun}:${HEADSCALE_PORTS.stun}/udp`] : []),
    `${image} serve`,
  ].join(" \\\n  ");
  return `[Unit]
Description=Headscale control server (hardened-matrix)
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target
RequiresMountsFor=${STATE_MOUNT}

[Service]
# RequiresMountsFor alone is met by "/" when no fstab line names the mount point (systemd.unit(5)):
# never start on the root disk's empty directory, whatever happened at boot; retry until mounted.
ExecStartPre=${STATE_MOUNT_CHECK}
ExecStartPre=-/usr/bin/docker rm -f headscale
ExecStart=${run}
ExecStop=/usr/bin/docker stop headscale
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
`;
}

export function bootstrapUnit(): string {
  return `[Unit]
Description=Headscale bootstrap: seal an API key for Pulumi (hardened-matrix)
Requires=${HEADSCALE_UNIT}
After=${HEADSCALE_UNIT}
ConditionPathExists=!${BOOTSTRAP_STATE_DIR}/done

[Service]
Type=simple
ExecStart=${BOOTSTRAP_SCRIPT_PATH}
`;
}

export function renderHeadscaleCloudInit(c: HeadscaleCloudInitInput): string {
  const script = renderBootstrapScript({ ...c.bootstrap, bindAddress: "0.0.0.0", port: HEADSCALE_PORTS.http, stateDir: BOOTSTRAP_STATE_DIR });
  const device = volumeDevice(c.volumeName);
  const config = {
    hostname: c.hostname,
    package_update: true,
    // Debian's docker engine; openssl seals, python3 serves the blob (both in Debian 12's image already).
    // unattended-upgrades: the control node faces the internet and has no admin shell, so Debian's
    // security updates (docker.io included) must arrive by themselves, as on the cluster nodes.
    packages: ["docker.io", "openssl", "python3", "unattended-upgrades"],
    // No fs_setup/mounts: they run in cloud-init's early disk stage and skip a device that is not
    // there yet, writing no fstab line (canonical/cloud-init cloudinit/config/cc_mounts.py), and the
    // VolumeAttachment is made after the droplet. As on the cluster nodes (render/cloudInit.ts),
    // runcmd waits for the device, formats it only if blank, mounts it by UUID, then starts Headscale.
    write_files: [
      { path: `${HEADSCALE_CONFIG_DIR}/config.yaml`, permissions: "0644", content: c.configYaml },
      { path: `${HEADSCALE_CONFIG_DIR}/policy.hujson`, permissions: "0644", content: c.policyHujson },
      { path: BOOTSTRAP_SCRIPT_PATH, permissions: "0700", content: script },
      { path: PREPARE_VOLUME_SCRIPT, permissions: "0755", content: PREPARE_VOLUME_SH },
      // Deferred until the packages are installed, so unattended-upgrades' own setup cannot replace it.
      { path: AUTO_UPGRADES_PATH, permissions: "0644", content: AUTO_UPGRADES, defer: true },
      { path: `/etc/systemd/system/${HEADSCALE_UNIT}`, permissions: "0644", content: headscaleUnit(c.image, c.derp) },
      { path: `/etc/systemd/system/${BOOTSTRAP_UNIT}`, permissions: "0644", content: bootstrapUnit() },
    ],
    runcmd: [
      // cloud-init runs runcmd as one sh script without -e (cc_runcmd.py, util.shellify): stop at
      // the first failure, so Headscale is never enabled without its volume.
      "set -eu",
      // No SSH on this node at all: the firewall has no port 22 and the daemon does not run.
      ["systemctl", "disable", "--now", "ssh.service"],
      [PREPARE_VOLUME_SCRIPT, device, STATE_MOUNT, "ext4", "/etc/fstab", String(STATE_VOLUME_WAIT_SECONDS)],
      ["systemctl", "daemon-reload"],
      ["systemctl", "enable", "--now", HEADSCALE_UNIT],
      ["systemctl", "start", "--no-block", BOOTSTRAP_UNIT],
    ],
  };
  return `#cloud-config\n${new Document(config, { aliasDuplicateObjects: false }).toString({ lineWidth: 0 })}`;
}

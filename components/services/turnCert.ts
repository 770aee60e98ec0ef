import type * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { hardenedService } from "../hardening";
import { TURN_CERT_HEARTBEAT_MINUTES, renderTurnCertScript } from "../render/turnCert";
import { overlayNetwork } from "./network";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";

/**
 * Its own uid, and nogroup (65534) as its group: coturn runs as 65534:65534 and reads the installed
 * certificate through the group (0640); nothing else on the turn node runs in that group.
 */
export const TURN_CERT_USER = "10020:65534";
/** Where both services see the shared volume (absent from both images, so nothing is copied over it). */
export const TURN_CERT_DIR = "/run/turn-cert";
/** Chain and key in one file: coturn's cert= and pkey= (see render/turnCert.ts). */
export const TURN_CERT_LIVE_PEM = `${TURN_CERT_DIR}/live/turn.pem`;
export const TURN_CERT_VOLUME = "hardened-matrix-turn-cert";
const STATE_DIR = `${TURN_CERT_DIR}/lego`;
const SCRIPT_FILE = "/etc/turn-cert/renew.sh";
const TOKEN_FILE = "/run/secrets/cf-dns-api-token";
const HEARTBEAT = "/tmp/turn-cert.heartbeat";

/**
 * The volume coturn and turn-cert share, on the turn node. A local tmpfs volume: Docker's local driver
 * mounts it on the first container that uses it and unmounts it after the last (moby/moby
 * volume/local/local.go Mount/Unmount, refcounted), and tmpfs takes the owner and mode as mount options,
 * which a disk-backed named volume cannot (it is created root-owned). So the state lives while either
 * service runs (an update of one keeps it), and is gone only when both stop (a reboot): the loop then
 * obtains a new certificate, one of Let's Encrypt's 5 per week for one name.
 */
export function turnCertVolumeMount(readOnly: boolean): docker.types.input.ServiceTaskSpecContainerSpecMount {
  const [uid, gid] = TURN_CERT_USER.split(":");
  return {
    type: "volume",
    source: TURN_CERT_VOLUME,
    target: TURN_CERT_DIR,
    readOnly,
    volumeOptions: {
      noCopy: true,
      driverName: "local",
      // Identical on both mounts: whichever task starts first creates the volume with these.
      driverOptions: { type: "tmpfs", device: "tmpfs", o: `size=4m,uid=${uid},gid=${gid},mode=0750` },
    },
  };
}

export interface TurnCertArgs {
  /** Pinned goacme/lego image. */
  image: pulumi.Input<string>;
  /** The TURN host name. */
  domain: string;
  email: string;
  /** ACME directory URL. */
  server: string;
  /** Cloudflare API token with Zone.DNS edit on the zone (the stack's acmeDnsToken). */
  dnsToken: pulumi.Input<string>;
  constraints: string[];
}

/**
 * Obtains and renews the TURN certificate with lego (ACME DNS-01 through Cloudflare: no port opens,
 * and it works whether or not the turn node is the edge), and installs it where coturn reloads it.
 */
export class TurnCert extends pulumi.ComponentResource {
  readonly service: docker.Service;

  constructor(name: string, args: TurnCertArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:calls:TurnCert", name, {}, opts);
    const script = swarmConfig(
      `${name}-script`,
      "turn-cert-script",
      renderTurnCertScript({
        domain: args.domain,
        email: args.email,
        server: args.server,
        statePath: STATE_DIR,
        livePem: TURN_CERT_LIVE_PEM,
        heartbeatFile: HEARTBEAT,
        // Traefik's DNS-01 is lego's cloudflare provider too; the same token works for both.
        dns: { provider: "cloudflare" },
      }),
      { parent: this },
    );
    const token = swarmSecret(`${name}-dns-token`, "turn-cert-dns-token", args.dnsToken, { parent: this });
    // Egress only (Let's Encrypt and Cloudflare's API); no other service is on it, and it publishes nothing.
    const net = overlayNetwork(`${name}-net`, { networkName: "turn-cert", internal: false }, { parent: this });
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: "turn-cert",
        image: args.image,
        user: TURN_CERT_USER,
        commands: ["/bin/sh", SCRIPT_FILE],
        // lego reads <VAR>_FILE for each credential (go-acme/lego platform/config/env GetOrFile).
        env: { CF_DNS_API_TOKEN_FILE: TOKEN_FILE },
        tmpfs: [{ target: "/tmp", sizeMb: 1 }],
        mounts: [turnCertVolumeMount(false)],
        secrets: [secretMount(token, TOKEN_FILE, TURN_CERT_USER)],
        configs: [configMount(script, SCRIPT_FILE, TURN_CERT_USER)],
        memoryLimitMb: 64,
        memoryReservationMb: 16,
        cpus: 0.25,
        // The loop beats every minute while it sleeps and before each lego run (bounded to 10 min).
        healthcheck: {
          test: ["/bin/sh", "-c", `test -n "$(find ${HEARTBEAT} -mmin -${TURN_CERT_HEARTBEAT_MINUTES})"`],
          intervalSeconds: 60,
          startPeriodSeconds: 30,
        },
        networkIds: [net.id],
        constraints: args.constraints,
        updateOrder: "stop-first",
      },
      { parent: this },
    );
    this.registerOutputs({});
  }
}

import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { hardenedService } from "../hardening";
import { renderTurnserverRun } from "../render/turnCert";
import { renderTurnserverConf, turnUris } from "../render/turnserver";
import { configMount, secretMount, swarmConfig, swarmSecret } from "./swarmFiles";
import { TURN_CERT_LIVE_PEM, turnCertVolumeMount } from "./turnCert";

/** nobody, as the coturn image runs. */
export const COTURN_USER = "65534:65534";
const CONFIG_FILE = "/etc/coturn/turnserver.conf";
const CERT_FILE = "/run/secrets/turn-cert.pem";
const KEY_FILE = "/run/secrets/turn-key.pem";
const RUN_FILE = "/etc/coturn/run-turnserver.sh";

/** TURN TLS from the turn-cert service: chain and key in one file, so one rename replaces both. */
export function acmeTurnTlsFiles(livePem: string): { certFile: string; keyFile: string } {
  return { certFile: livePem, keyFile: livePem };
}

/**
 * TURN over TLS: an operator's own certificate (Swarm secrets; replaced only by a new deploy), or the
 * one the turn-cert service obtains and renews (read from the volume they share, reloaded in place).
 */
export type CoturnTls = { kind: "static"; certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> } | { kind: "acme"; dependsOn: pulumi.Resource };

export interface CoturnArgs {
  image: pulumi.Input<string>;
  /** Host name clients use (realm and URIs). */
  host: string;
  /** Public address of the TURN node, advertised to clients (never looked up from outside). */
  externalIp: pulumi.Input<string>;
  port: number;
  tlsPort: number;
  minPort: number;
  maxPort: number;
  /** Private ranges of this deployment, denied on top of the public special-purpose list. */
  deniedPeerRanges: string[];
  /** Certificate for TURN over TLS; without it only plain TURN (its media is SRTP-encrypted anyway). */
  tls?: CoturnTls;
  constraints: string[];
}

/**
 * coTURN for calls. Credentials are minted by Dendrite from the shared secret this component
 * generates (use-auth-secret); relaying to private and special ranges is refused.
 */
export class Coturn extends pulumi.ComponentResource {
  readonly sharedSecret: pulumi.Output<string>;
  readonly uris: pulumi.Output<string[]>;
  readonly service: docker.Service;

  constructor(name: string, args: CoturnArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:calls:Coturn", name, {}, opts);
    const secret = new random.RandomPassword(`${name}-shared-secret`, { length: 48, special: false }, { parent: this });
    const config = swarmSecret(
      `${name}-config`,
      "coturn-config",
      pulumi.all([secret.result, args.externalIp]).apply(([sharedSecret, externalIp]) =>
        renderTurnserverConf({
          realm: args.host,
          sharedSecret,
          externalIp,
          listeningPort: args.port,
          tlsListeningPort: args.tlsPort,
          minPort: args.minPort,
          maxPort: args.maxPort,
          tls: args.tls?.kind === "acme" ? acmeTurnTlsFiles(TURN_CERT_LIVE_PEM) : args.tls ? { certFile: CERT_FILE, keyFile: KEY_FILE } : undefined,
          deniedPeerRanges: args.deniedPeerRanges,
          // A call needs a handful of allocations; bound what one user and the server may hold.
          userQuota: 12,
          totalQuota: 1200,
        }),
      ),
      { parent: this },
    );
    const secrets = [secretMount(config, CONFIG_FILE, COTURN_USER)];
    const configs: docker.types.input.ServiceTaskSpecContainerSpecConfig[] = [];
    const mounts: docker.types.input.ServiceTaskSpecContainerSpecMount[] = [];
    if (args.tls?.kind === "acme") {
      // turnserver under a watcher that reloads the certificate when turn-cert replaces it (render/turnCert.ts).
      const run = swarmConfig(`${name}-run`, "coturn-run", renderTurnserverRun({ configFile: CONFIG_FILE, certFile: TURN_CERT_LIVE_PEM }), { parent: this });
      configs.push(configMount(run, RUN_FILE, COTURN_USER));
      mounts.push(turnCertVolumeMount(true));
    } else if (args.tls) {
      secrets.push(secretMount(swarmSecret(`${name}-tls-cert`, "coturn-tls-cert", args.tls.certPem, { parent: this }), CERT_FILE, COTURN_USER));
      secrets.push(secretMount(swarmSecret(`${name}-tls-key`, "coturn-tls-key", args.tls.keyPem, { parent: this }), KEY_FILE, COTURN_USER));
    }
    const relayPorts = args.maxPort - args.minPort + 1;
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: "coturn",
        image: args.image,
        user: COTURN_USER,
        capAdd: [
          {
            capability: "NET_BIND_SERVICE",
            reason: "the image's turnserver binary carries this file capability; exec fails without it in the bounding set (coturn issue #1126)",
          },
        ],
        // coturn/coturn is debian:*-slim (docker/coturn/debian/Dockerfile): /bin/sh is dash, with coreutils.
        ...(args.tls?.kind === "acme" ? { commands: ["/bin/sh", RUN_FILE], args: [] } : { commands: ["turnserver"], args: ["-c", CONFIG_FILE] }),
        tmpfs: [
          { target: "/var/tmp", sizeMb: 4, mode: 0o1777 },
          { target: "/var/lib/coturn", sizeMb: 4, mode: 0o1777 },
          { target: "/tmp", sizeMb: 4, mode: 0o1777 },
        ],
        secrets,
        configs: configs.length > 0 ? configs : undefined,
        mounts,
        // Each relay port holds buffers: scale the limit with the range.
        memoryLimitMb: Math.min(1024, 128 + relayPorts),
        memoryReservationMb: 64,
        cpus: 1,
        // coturn/coturn:4.17.0 is the Debian image (docker/coturn/Makefile at docker/4.17.0-r0: the plain
        // version tag is the first, debian, entry); docker/coturn/debian/Dockerfile runs `make install`
        // with --prefix=/usr and copies it in, and Makefile.in's install target installs
        // bin/turnutils_stunclient: /usr/bin/turnutils_stunclient. test/coturn.real.test.ts runs it.
        healthcheck: { test: ["turnutils_stunclient", "-p", String(args.port), "127.0.0.1"], intervalSeconds: 30, startPeriodSeconds: 10 },
        networkIds: [],
        replacedWith: [args.externalIp],
        hostNetworkReason: "TURN relays UDP on a port range to clients' real addresses: the Swarm ingress cannot publish the range and would NAT the client address",
        constraints: args.constraints,
        updateOrder: "stop-first",
      },
      // After turn-cert: a deploy that changes both updates them one after the other, so the shared volume
      // usually keeps a task mounting it (see turnCertVolumeMount for when it does not).
      { parent: this, dependsOn: args.tls?.kind === "acme" ? [args.tls.dependsOn] : [] },
    );
    this.sharedSecret = secret.result;
    this.uris = pulumi.output(turnUris(args.host, { listeningPort: args.port, tlsListeningPort: args.tlsPort, tls: args.tls !== undefined }));
    this.registerOutputs({ uris: this.uris, sharedSecret: this.sharedSecret });
  }
}

import { createHash } from "node:crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { hardenedService } from "../hardening";
import { renderDendriteYaml } from "../render/dendrite";
import { dendriteRouterLabels } from "../render/dendriteRoutes";
import { matrixSigningKey } from "../render/signingKey";
import { secretMount, swarmSecret } from "./swarmFiles";

export const DENDRITE_USER = "10002:10002";
export const DENDRITE_PORT = 8008;
const CONFIG_FILE = "/etc/dendrite/dendrite.yaml";
const KEY_FILE = "/run/secrets/matrix-signing-key.pem";
const DATA_DIR = "/var/dendrite";

export interface DendriteArgs {
  image: pulumi.Input<string>;
  serverName: string;
  /** Host serving the client API and media. */
  matrixHost: string;
  /** Published federation port: where /.well-known/matrix/server sends other servers. */
  federationPort: number;
  /** Set when Traefik serves /.well-known/matrix/* for the server name. */
  wellKnownHost?: string;
  publicBaseUrl: string;
  /** `gateAddress`: the federation gate's forwardAuth URL, required for "allowlist". */
  federation: { mode: "open" | "closed" | "allowlist"; gateAddress?: string };
  presence: boolean;
  maxUploadMb: number;
  rateLimit: { threshold: number; cooloffMs: number };
  database: { host: pulumi.Input<string>; port: pulumi.Input<number>; name: pulumi.Input<string>; user: pulumi.Input<string>; password: pulumi.Input<string>; maxConnections: number; networkId: pulumi.Input<string> };
  turn?: { uris: pulumi.Input<string[]>; sharedSecret: pulumi.Input<string>; userLifetime: string };
  /** Ranges of this deployment federation requests must never reach (SSRF). */
  denyNetworks: string[];
  /** Persistent storage for media, JetStream and the search index. */
  storage: pulumi.Input<Omit<docker.types.input.ServiceTaskSpecContainerSpecMount, "target">>;
  edgeNetworkId: pulumi.Input<string>;
  certResolver?: string;
  /** SRV delegation: the server name, which the federation entrypoint needs a certificate for. */
  federationCertDomain?: string;
  /** Ingress funnel: Traefik's entrypoint for requests from the Funnel container. */
  funnelEntryPoint?: string;
  memoryLimitMb: number;
  constraints: string[];
}

/**
 * The homeserver. Its signing key is generated once and protected: losing it breaks the server's
 * federation identity. The whole config (it holds the database password and shared secrets) is a
 * Swarm secret; Traefik routes only the Matrix API prefixes to it.
 */
export class Dendrite extends pulumi.ComponentResource {
  readonly signingKeyId: pulumi.Output<string>;
  readonly signingPublicKey: pulumi.Output<string>;
  readonly registrationSharedSecret: pulumi.Output<string>;
  readonly service: docker.Service;

  constructor(name: string, args: DendriteArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:matrix:Dendrite", name, {}, opts);
    // Generated once; protected and retained so no `pulumi destroy` or refactor can lose it.
    const seed = new random.RandomBytes(`${name}-signing-seed`, { length: 32 }, { parent: this, protect: true, retainOnDelete: true });
    const key = seed.base64.apply((b64) => {
      const bytes = Buffer.from(b64, "base64");
      // The key name is derived from the seed: stable for as long as the key is.
      return matrixSigningKey(bytes, `hm_${createHash("sha256").update(bytes).digest("hex").slice(0, 8)}`);
    });
    const keySecret = swarmSecret(`${name}-signing-key`, "matrix-signing-key", key.apply((k) => k.pem), { parent: this });
    const registrationSecret = new random.RandomPassword(`${name}-registration-secret`, { length: 48, special: false }, { parent: this });

    const config = pulumi
      .all([args.database.host, args.database.port, args.database.name, args.database.user, args.database.password, registrationSecret.result, args.turn?.uris ?? [], args.turn?.sharedSecret ?? ""])
      .apply(([host, port, dbName, user, password, registrationSharedSecret, turnUris, turnSecret]) =>
        renderDendriteYaml({
          serverName: args.serverName,
          privateKeyPath: KEY_FILE,
          database: { host, port, name: dbName, user, password, sslMode: "disable", maxOpenConnections: args.database.maxConnections },
          wellKnownServerName: args.wellKnownHost ? `${args.matrixHost}:${args.federationPort}` : undefined,
          wellKnownClientName: args.publicBaseUrl,
          federationDisabled: args.federation.mode === "closed",
          presence: { inbound: args.presence, outbound: args.presence },
          registrationSharedSecret,
          rateLimiting: { threshold: args.rateLimit.threshold, cooloffMs: args.rateLimit.cooloffMs },
          maxUploadBytes: args.maxUploadMb * 1024 * 1024,
          mediaPath: `${DATA_DIR}/media`,
          jetstreamPath: `${DATA_DIR}/jetstream`,
          searchIndexPath: `${DATA_DIR}/searchindex`,
          turn: args.turn ? { uris: turnUris, sharedSecret: turnSecret, userLifetime: args.turn.userLifetime } : null,
          // Dendrite takes the first address of this header (syncapi/sync/requestpool.go updateLastSeen).
          // Traefik's X-Forwarded-For starts with the peer it does not trust, or with what a trusted
          // Funnel set; X-Real-Ip would be a client-sent value passed through Funnel, or Funnel's own address.
          realIpHeader: "X-Forwarded-For",
          denyNetworks: args.denyNetworks,
          // Keep Dendrite's caches well inside its memory limit.
          cacheMaxBytes: Math.floor((args.memoryLimitMb * 1024 * 1024) / 4),
          metricsEnabled: false,
        }),
      );
    const configSecret = swarmSecret(`${name}-config`, "dendrite-config", config, { parent: this });

    const labels = dendriteRouterLabels({
      service: "dendrite",
      port: DENDRITE_PORT,
      edgeNetwork: "edge",
      matrixHost: args.matrixHost,
      wellKnownHost: args.wellKnownHost,
      federation: args.federation,
      certResolver: args.certResolver,
      federationCertDomain: args.federationCertDomain,
      funnelEntryPoint: args.funnelEntryPoint,
    });
    this.service = hardenedService(
      `${name}-service`,
      {
        serviceName: "dendrite",
        image: args.image,
        user: DENDRITE_USER,
        commands: ["/usr/bin/dendrite"],
        args: ["-config", CONFIG_FILE, "-http-bind-address", `:${DENDRITE_PORT}`],
        tmpfs: [{ target: "/tmp", sizeMb: 256, mode: 0o1777 }],
        mounts: [pulumi.output(args.storage).apply((m) => ({ ...m, target: DATA_DIR, readOnly: false }))],
        secrets: [secretMount(configSecret, CONFIG_FILE, DENDRITE_USER), secretMount(keySecret, KEY_FILE, DENDRITE_USER)],
        memoryLimitMb: args.memoryLimitMb,
        memoryReservationMb: Math.round(args.memoryLimitMb / 4),
        healthcheck: {
          // The image ships curl: element-hq/dendrite Dockerfile at v0.15.2, final stage `FROM alpine`
          // with `apk add curl` (the image .github/workflows/docker.yml publishes as dendrite-monolith).
          test: ["curl", "-fsS", "-o", "/dev/null", `http://127.0.0.1:${DENDRITE_PORT}/_matrix/client/versions`],
          intervalSeconds: 30,
          startPeriodSeconds: 60,
        },
        networkIds: [args.edgeNetworkId, args.database.networkId],
        constraints: args.constraints,
        labels,
        // JetStream and the search index are single-writer stores on the volume.
        updateOrder: "stop-first",
      },
      { parent: this },
    );
    // Public by nature: derived from the secret seed, but published at /_matrix/key/v2/server.
    this.signingKeyId = pulumi.unsecret(key.apply((k) => k.keyId));
    this.signingPublicKey = pulumi.unsecret(key.apply((k) => k.publicKeyBase64));
    this.registrationSharedSecret = registrationSecret.result;
    this.registerOutputs({ signingKeyId: this.signingKeyId, signingPublicKey: this.signingPublicKey, registrationSharedSecret: this.registrationSharedSecret });
  }
}

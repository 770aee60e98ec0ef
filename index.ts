import { statSync } from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import { CloudPlatform } from "./components/platform/cloud";
import { LocalSwarm } from "./components/platform/local";
import { roleConstraint, type Platform } from "./components/platform/platform";
import { loadSettings, type Settings } from "./components/settings";
import { SocketProxy } from "./components/services/socketProxy";
import { Traefik, TRAEFIK_USER } from "./components/services/traefik";
import { Coturn, type CoturnTls } from "./components/services/coturn";
import { TurnCert } from "./components/services/turnCert";
import { Dendrite, DENDRITE_USER } from "./components/services/dendrite";
import { FederationGate } from "./components/services/federationGate";
import { Postgres, POSTGRES_USER } from "./components/services/postgres";
import { Backup } from "./components/services/backup";
import { BackupBucket } from "./components/platform/backupBucket";
import { ACME_SERVERS, CERT_RESOLVER, FUNNEL_ENTRYPOINT, TRAEFIK_PORTS } from "./components/render/traefik";
import { Funnel, FUNNEL_USER } from "./components/services/funnel";
import { wellKnownDocuments } from "./components/render/funnel";

// Tailscale and Headscale hand out addresses from CGNAT space (and this ULA prefix for IPv6).
const VPN_SOURCE_RANGES = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"];

function localPlatform(settings: Settings): Platform {
  return new LocalSwarm("local", {
    addressPool: settings.swarmAddressPool,
    memoryMb: settings.nodeMemoryMb,
    turnExternalIp: settings.turnExternalIp || "127.0.0.1",
    toolImage: settings.images.postgres,
  });
}

function cloudPlatform(settings: Settings): CloudPlatform {
  return new CloudPlatform("cloud", {
    stack: settings.stack,
    region: settings.region,
    vpcRange: settings.vpcRange,
    swarmAddressPool: settings.swarmAddressPool,
    meshCidr: settings.meshCidr,
    meshPskVersion: settings.meshPskVersion,
    nodes: settings.nodes,
    sshKeys: settings.sshKeys,
    admins: settings.admins,
    deployerTag: settings.deployerTag || undefined,
    dockerSocketGid: settings.dockerSocketGid,
    domain: settings.domain,
    matrixFqdn: settings.matrixFqdn,
    serverName: settings.serverName,
    cloudflareZoneId: settings.cloudflareZoneId,
    acmeEmail: settings.acmeEmail,
    ports: { http: settings.httpPort, https: settings.httpsPort, federation: settings.federationPort, admin: settings.adminPort },
    turn: settings.turnEnabled
      ? {
          fqdn: settings.turnFqdn,
          port: settings.turnPort,
          ...(settings.turnTls === "off" ? {} : { tlsPort: settings.turnTlsPort }),
          minPort: settings.turnMinPort,
          maxPort: settings.turnMaxPort,
        }
      : undefined,
    servesWellKnown: settings.servesWellKnown,
    delegation: settings.delegation,
    headscale:
      settings.vpn === "headscale" && settings.acmeCa !== "none"
        ? { fqdn: settings.headscaleFqdn, image: settings.images.headscale, acmeCa: settings.acmeCa, derp: settings.headscaleDerp }
        : undefined,
    spacesBackups: settings.backupPlan?.repository.kind === "spaces",
    funnel:
      settings.ingress === "funnel"
        ? { cloudflareAccountId: settings.cloudflareAccountId, wellKnown: wellKnownDocuments({ fqdn: settings.funnelFqdn }) }
        : undefined,
  });
}

/** The group of the local engine's socket, if there is one here: a fact about this machine, not config. */
function localDockerSocketGid(): number | undefined {
  try {
    return statSync("/var/run/docker.sock").gid;
  } catch {
    return undefined;
  }
}

async function main(): Promise<Record<string, unknown>> {
  const settings = loadSettings({
    localDockerSocketGid: localDockerSocketGid(),
    spacesKeysInEnv: Boolean(process.env.SPACES_ACCESS_KEY_ID && process.env.SPACES_SECRET_ACCESS_KEY),
  });
  for (const warning of settings.warnings ?? []) pulumi.log.warn(warning);
  const cloud = settings.target === "digitalocean" ? cloudPlatform(settings) : undefined;
  const platform: Platform = cloud ?? localPlatform(settings);
  try {
    return services(settings, platform, cloud?.funnel?.authKey);
  } finally {
    // Cloud nodes' cloud-init is rendered once every service has asked for its storage.
    cloud?.seal();
  }
}

function services(settings: Settings, platform: Platform, funnelAuthKey?: pulumi.Output<string>): Record<string, unknown> {
  const onSwarm: pulumi.ComponentResourceOptions = { providers: [platform.provider] };

  // Ingress funnel: the only way in, proxying to Traefik's funnel entrypoint.
  let funnel: Funnel | undefined;
  if (settings.ingress === "funnel") {
    if (!funnelAuthKey) throw new Error("ingress funnel: the platform gave no Funnel auth key");
    funnel = new Funnel(
      "funnel",
      {
        image: settings.images.tailscale,
        fqdn: settings.funnelFqdn,
        authKey: funnelAuthKey,
        storage: platform.storage("funnel", "edge", FUNNEL_USER),
        upstream: `http://traefik:${TRAEFIK_PORTS.funnel}`,
        addressPool: settings.swarmAddressPool,
        constraints: [roleConstraint("edge")],
      },
      onSwarm,
    );
  }

  const socketProxy = new SocketProxy("socket-proxy", { image: settings.images.socketProxy, dockerSocketGid: settings.dockerSocketGid }, onSwarm);
  // Only with an allowlist: Traefik asks the gate about every inbound federation request.
  const federationGate =
    settings.federationMode === "allowlist"
      ? new FederationGate("federation-gate", { image: settings.images.federationGate, allowlist: settings.federationAllowlist, constraints: [roleConstraint("edge")] }, onSwarm)
      : undefined;
  const traefik = new Traefik(
    "traefik",
    {
      image: settings.images.traefik,
      socketProxyEndpoint: socketProxy.endpoint,
      socketProxyNetworkId: socketProxy.networkId,
      extraNetworkIds: federationGate ? [federationGate.networkId] : [],
      ports: { http: settings.httpPort, https: settings.httpsPort, federation: settings.federationPort, admin: settings.adminPort },
      maxUploadMb: settings.maxUploadMb,
      acme:
        settings.acmeCa === "none"
          ? undefined
          : {
              ca: settings.acmeCa,
              email: settings.acmeEmail,
              dnsToken: settings.secrets.acmeDnsToken,
              storage: platform.storage("acme", "edge", TRAEFIK_USER),
            },
      dashboard: settings.dashboard ? { allowedSourceRanges: VPN_SOURCE_RANGES } : undefined,
      funnel: funnel && { networkId: funnel.networkId, subnet: funnel.subnet },
      constraints: [roleConstraint("edge")],
    },
    onSwarm,
  );

  const privateRanges = [settings.swarmAddressPool, ...platform.privateRanges];
  const postgres = new Postgres(
    "postgres",
    {
      image: settings.images.postgres,
      nodeMemoryMb: platform.nodeMemoryMb("db"),
      storage: platform.storage("postgres", "db", POSTGRES_USER),
      constraints: [roleConstraint("db")],
      database: "dendrite",
      role: "dendrite",
    },
    onSwarm,
  );
  const coturn = settings.turnEnabled
    ? new Coturn(
        "coturn",
        {
          image: settings.images.coturn,
          host: settings.turnFqdn,
          externalIp: platform.turnExternalIp,
          port: settings.turnPort,
          tlsPort: settings.turnTlsPort,
          minPort: settings.turnMinPort,
          maxPort: settings.turnMaxPort,
          deniedPeerRanges: privateRanges,
          tls: turnTls(settings, onSwarm),
          constraints: [roleConstraint("turn")],
        },
        onSwarm,
      )
    : undefined;
  // Through Funnel the client API is on the ts.net name's port 443.
  const httpsSuffix = settings.httpsPort === 443 || funnel ? "" : `:${settings.httpsPort}`;
  const publicBaseUrl = `https://${settings.matrixFqdn}${httpsSuffix}`;
  const dendriteStorage = platform.storage("dendrite", "db", DENDRITE_USER);
  const dendrite = new Dendrite(
    "dendrite",
    {
      image: settings.images.dendrite,
      serverName: settings.serverName,
      matrixHost: settings.matrixFqdn,
      federationPort: settings.federationPort,
      wellKnownHost: settings.servesWellKnown ? settings.serverName : undefined,
      publicBaseUrl,
      federation: { mode: settings.federationMode, gateAddress: federationGate?.address },
      presence: settings.presence,
      maxUploadMb: settings.maxUploadMb,
      rateLimit: { threshold: settings.rateLimitThreshold, cooloffMs: settings.rateLimitCooloffMs },
      database: {
        host: postgres.host,
        port: postgres.port,
        name: postgres.database,
        user: postgres.user,
        password: postgres.password,
        maxConnections: Math.max(10, postgres.maxConnections - 10),
        networkId: postgres.networkId,
      },
      turn: coturn && { uris: coturn.uris, sharedSecret: coturn.sharedSecret, userLifetime: settings.turnUserLifetime },
      denyNetworks: privateRanges,
      storage: dendriteStorage,
      edgeNetworkId: traefik.edgeNetworkId,
      certResolver: settings.acmeCa === "none" ? undefined : CERT_RESOLVER,
      federationCertDomain: settings.delegation === "srv" ? settings.serverName : undefined,
      funnelEntryPoint: funnel ? FUNNEL_ENTRYPOINT : undefined,
      memoryLimitMb: Math.min(2048, Math.max(384, Math.round(platform.nodeMemoryMb("db") * 0.3))),
      constraints: [roleConstraint("db")],
    },
    onSwarm,
  );

  const backup = settings.backupPlan && backups(settings, settings.backupPlan, postgres, dendriteStorage, onSwarm);

  return {
    target: settings.target,
    ingress: settings.ingress,
    serverName: settings.serverName,
    matrixUrl: publicBaseUrl,
    signingKeyId: dendrite.signingKeyId,
    signingPublicKey: dendrite.signingPublicKey,
    registrationSharedSecret: dendrite.registrationSharedSecret,
    ...(coturn ? { turnUris: coturn.uris } : {}),
    ...platform.outputs,
    ...(traefik.dashboardPassword ? { traefikDashboardPassword: traefik.dashboardPassword } : {}),
    ...(backup ?? {}),
  };
}

/** TURN over TLS: the certificate the turn-cert service keeps renewed, the operator's own, or none. */
function turnTls(settings: Settings, onSwarm: pulumi.ComponentResourceOptions): CoturnTls | undefined {
  const { turnTlsCertPem, turnTlsKeyPem, acmeDnsToken } = settings.secrets;
  if (settings.turnTls === "static" && turnTlsCertPem && turnTlsKeyPem) return { kind: "static", certPem: turnTlsCertPem, keyPem: turnTlsKeyPem };
  if (settings.turnTls !== "acme") return undefined;
  // settings.ts refuses acme without these; the checks narrow the types.
  if (settings.acmeCa === "none" || !acmeDnsToken) throw new Error("turnTls acme: settings let through acmeCa none or no acmeDnsToken");
  const turnCert = new TurnCert(
    "turn-cert",
    {
      image: settings.images.lego,
      domain: settings.turnFqdn,
      email: settings.acmeEmail,
      server: ACME_SERVERS[settings.acmeCa],
      dnsToken: acmeDnsToken,
      // Next to coturn: they share a volume on the turn node.
      constraints: [roleConstraint("turn")],
    },
    onSwarm,
  );
  return { kind: "acme", dependsOn: turnCert };
}

/** Backups of the database and media: the repository (a Spaces bucket made here, or from settings) and the services. */
function backups(
  settings: Settings,
  plan: NonNullable<Settings["backupPlan"]>,
  postgres: Postgres,
  dendriteStorage: ReturnType<Platform["storage"]>,
  onSwarm: pulumi.ComponentResourceOptions,
): Record<string, unknown> {
  const repo = plan.repository;
  const bucket = repo.kind === "spaces" ? new BackupBucket("backup-bucket", { stack: settings.stack, region: repo.region }) : undefined;
  const s3 =
    repo.kind === "spaces" && bucket
      ? { url: bucket.repository, credentials: { accessKeyId: bucket.accessKeyId, secretAccessKey: bucket.secretAccessKey } }
      : repo.kind === "s3"
        ? { url: repo.url, credentials: { accessKeyId: settings.secrets.backupS3AccessKeyId!, secretAccessKey: settings.secrets.backupS3SecretAccessKey! } }
        : undefined;
  const repository = repo.kind === "path" ? { hostPath: repo.path } : s3!;
  const backup = new Backup(
    "backup",
    {
      resticImage: settings.images.restic,
      postgresImage: settings.images.postgres,
      snapshotHost: `hm-${settings.stack}`,
      repository,
      database: { host: postgres.host, port: postgres.port, name: postgres.database, user: postgres.user, password: postgres.password, networkId: postgres.networkId },
      dendriteStorage,
      user: DENDRITE_USER,
      intervalHours: plan.intervalHours,
      retention: plan.retention,
      constraints: [roleConstraint("db")],
    },
    onSwarm,
  );
  return {
    backupRepository: backup.repository,
    // Without it no backup can be read: keep a copy outside Pulumi state (README, "Backups").
    backupRepositoryPassword: backup.repositoryPassword,
    ...(s3 ? { backupS3AccessKeyId: pulumi.secret(s3.credentials.accessKeyId), backupS3SecretAccessKey: pulumi.secret(s3.credentials.secretAccessKey) } : {}),
  };
}

export = main;

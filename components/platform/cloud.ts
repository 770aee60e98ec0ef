import * as command from "@pulumi/command";
import * as digitalocean from "@pulumi/digitalocean";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { Dns } from "./dns";
import { Nodes, type VolumeSpec } from "./nodes";
import type { Platform, StoragePurpose } from "./platform";
import { BOOTSTRAP_MARKER, renderCloudInit } from "../render/cloudInit";
import { firewallPlans } from "../render/firewall";
import { renderTailnetPolicy } from "../render/tailscaleAcl";
import { DROPLET_SIZES, type DropletSize, type NodeRole, type NodeSettings } from "../settings";
import { Tailnet } from "./tailnet";
import { deployerJoinCommand, deployerOnTailnetCheck, HeadscaleServer } from "./headscale";
import { WireGuardMesh } from "./mesh";
import { DOCKER_SSH_OPTS } from "./remote";
import { SwarmCluster } from "./swarm";
import { meshAddress } from "../render/wireguard";
import { WellKnownWorker } from "./wellKnown";

export { DOCKER_SSH_OPTS } from "./remote";

/**
 * Where each kind of state lives and how big its volume starts (GiB; a volume can grow, never
 * shrink). Dendrite runs on the db node, next to Postgres: its media store and JetStream data sit
 * there, and the edge node carries only Traefik (and its ACME account and certificates).
 */
export const STORAGE_PLACEMENT: Record<StoragePurpose, { role: NodeRole; sizeGib: number; why: string }> = {
  postgres: { role: "db", sizeGib: 10, why: "the database" },
  dendrite: { role: "db", sizeGib: 20, why: "media store and JetStream (Dendrite runs next to Postgres)" },
  acme: { role: "edge", sizeGib: 1, why: "Traefik's ACME account and certificates" },
  headscale: { role: "edge", sizeGib: 1, why: "Headscale's SQLite database and keys" },
  funnel: { role: "edge", sizeGib: 1, why: "the Funnel device's tailscaled state (its node key and certificate)" },
};

// DigitalOcean list prices, checked 2026-11-23 (https://www.digitalocean.com/pricing):
// block storage USD 0.10 per GiB-month; a reserved IPv4 is free while assigned to a droplet.
export const VOLUME_PRICE_PER_GIB = 0.1;
export const RESERVED_IP_ASSIGNED_PRICE = 0;
// Spaces: USD 5 per month per account (not per bucket), 250 GiB stored and 1 TiB out included; USD 0.02
// per further GiB (DigitalOcean's answer in digitalocean.com/community/questions/prices-explanation-5-per-space-or-5-for-spaces, checked 2026-11-23).
export const SPACES_SUBSCRIPTION_PRICE = 5;

/** Monthly cost in USD, rounded to cents: droplets at `priceOf` plus volumes plus reserved IPs, plus Spaces if used. */
export function estimateMonthlyCost(sizes: string[], volumeGib: number[], reservedIps: number, priceOf: (size: string) => number, spaces = false): number {
  const droplets = sizes.reduce((sum, s) => sum + priceOf(s), 0);
  const volumes = volumeGib.reduce((sum, g) => sum + g * VOLUME_PRICE_PER_GIB, 0);
  return Math.round((droplets + volumes + reservedIps * RESERVED_IP_ASSIGNED_PRICE + (spaces ? SPACES_SUBSCRIPTION_PRICE : 0)) * 100) / 100;
}

export function tablePrice(size: string): number {
  const known = DROPLET_SIZES[size as DropletSize];
  if (!known) throw new Error(`no price known for droplet size ${size}`);
  return known.priceMonthly;
}

/** The mesh's UDP port, open only between the deployment's droplets (components/render/firewall.ts). */
export const WIREGUARD_PORT = 51820;

/** Waits (at most 15 minutes) until a node's cloud-init has written its bootstrap marker. */
export function bootstrapWaitCommand(address: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.interpolate`ssh ${DOCKER_SSH_OPTS.join(" ")} root@${address} 'timeout 900 sh -c "until test -f ${BOOTSTRAP_MARKER}; do sleep 5; done"'`;
}

export interface CloudPlatformArgs {
  stack: string;
  region: string;
  vpcRange: string;
  swarmAddressPool: string;
  /** The WireGuard mesh range; node addresses are hashed from their names into it. */
  meshCidr: string;
  /** Bumping it rotates every pair's preshared key. */
  meshPskVersion: number;
  nodes: NodeSettings[];
  sshKeys: string[];
  admins: string[];
  /** Tag of CI runners allowed to deploy over the tailnet (SSH to the nodes only). */
  deployerTag?: string;
  dockerSocketGid: number;
  domain: string;
  matrixFqdn: string;
  serverName: string;
  cloudflareZoneId: string;
  acmeEmail: string;
  /** Ports the edge publishes. */
  ports: { http: number; https: number; federation: number; admin: number };
  /** `tlsPort` only when TURN serves TLS (the firewall opens it then, and only then). */
  turn?: { fqdn: string; port: number; tlsPort?: number; minPort: number; maxPort: number };
  /** Traefik serves /.well-known/matrix on the server name: it must point at the edge. */
  servesWellKnown: boolean;
  delegation: "well-known" | "srv" | "none";
  /** vpn: headscale: the self-hosted control server replaces Tailscale's (unset: Tailscale). */
  headscale?: { fqdn: string; image: string; acmeCa: "letsencrypt" | "letsencrypt-staging"; derp: boolean };
  /** The stack keeps its backups in a Spaces bucket (counted in the cost estimate). */
  spacesBackups?: boolean;
  /**
   * Ingress funnel: no public inbound port, a tagged device key for the Funnel container, its
   * state volume, and the server name's well-known documents served by a Cloudflare Worker.
   */
  funnel?: { cloudflareAccountId: string; wellKnown: { server: string; client: string } };
}

function nodeWith(nodes: NodeSettings[], role: NodeRole): NodeSettings {
  const node = nodes.find((n) => n.roles.includes(role));
  if (!node) throw new Error(`no node carries the role "${role}"`);
  return node;
}

/**
 * Target `digitalocean`: nodes, firewall, volumes and DNS, admin access over a tailnet, and the
 * docker provider reaching the first manager over that tailnet.
 *
 * Storage ownership is collected from `storage()` calls while the services are declared, then
 * `seal()` (called by index.ts once every service exists) renders each node's cloud-init with the
 * directories to create. A droplet is created only after that.
 */
export class CloudPlatform extends pulumi.ComponentResource implements Platform {
  readonly provider: docker.Provider;
  readonly turnExternalIp: pulumi.Output<string>;
  readonly privateRanges: string[];
  readonly outputs: Record<string, pulumi.Input<unknown>>;
  readonly nodes: Nodes;
  /** The VPN's control plane: Tailscale's hosted one, or our Headscale server. */
  readonly tailnet: Tailnet | HeadscaleServer;
  readonly dns: Dns;
  readonly mesh: WireGuardMesh;
  readonly swarm: SwarmCluster;
  private readonly args: CloudPlatformArgs;
  private readonly owners = new Map<StoragePurpose, string>();
  private readonly volumes: Array<VolumeSpec & { purpose: StoragePurpose; role: NodeRole }>;
  private sealOwners!: (owners: Partial<Record<StoragePurpose, string>>) => void;
  private sealed = false;
  /** Ingress funnel: the Funnel device's tag and its single-use auth key (secret). */
  readonly funnel?: { tag: string; authKey: pulumi.Output<string> };

  constructor(name: string, args: CloudPlatformArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:Cloud", name, {}, opts);
    const child = { parent: this };
    const prefix = `hm-${args.stack}`;
    const clusterTag = `hardened-matrix-${args.stack}`;
    const nodeTag = `tag:${prefix}`;
    // The Headscale control node is no cluster member: HeadscaleServer owns it.
    const controlNode = args.nodes.find((n) => n.roles.includes("headscale"));
    args = { ...args, nodes: args.nodes.filter((n) => n !== controlNode) };
    this.args = args;
    // Root over Tailscale SSH: the docker provider connects as root.
    const funnelTag = `tag:${prefix}-funnel`;
    const policy = {
      admins: args.admins,
      nodeTag,
      adminPorts: [22, args.ports.admin],
      sshUsers: ["root"],
      deployerTag: args.deployerTag,
      funnelTag: args.funnel ? funnelTag : undefined,
    };

    if (args.headscale) {
      if (!controlNode) throw new Error('vpn "headscale" needs a node with role "headscale"');
      this.tailnet = new HeadscaleServer(
        `${name}-headscale`,
        {
          stack: args.stack,
          region: args.region,
          node: { name: controlNode.name, size: controlNode.size },
          fqdn: args.headscale.fqdn,
          zoneId: args.cloudflareZoneId,
          image: args.headscale.image,
          acmeEmail: args.acmeEmail,
          acmeCa: args.headscale.acmeCa,
          derp: args.headscale.derp,
          policy,
        },
        child,
      );
    } else {
      this.tailnet = new Tailnet(`${name}-tailnet`, { policy: renderTailnetPolicy(policy), nodeTag, description: `hardened-matrix ${args.stack} nodes` }, child);
    }
    const tailnet = this.tailnet;
    // A node's generation: replacing it (`pulumi up --replace <its urn>`, README "Replacing a node")
    // replaces its join key and then its droplet (both `replaceWith` it), so a droplet is never
    // created with a key older than that deployment. Nothing else replaces it.
    const generations: Record<string, random.RandomId> = {};
    for (const node of args.nodes) generations[node.name] = new random.RandomId(`${node.name}-generation`, { byteLength: 4 }, child);
    const authKeyFor = (node: string): pulumi.Output<string> => tailnet.authKeyFor(node, { replaceWith: [generations[node]!] });
    const loginServer = tailnet instanceof HeadscaleServer ? tailnet.apiUrl : undefined;

    // With Funnel, Tailscale holds the certificate: no ACME state, the Funnel device's state instead.
    const purposes: StoragePurpose[] = args.funnel ? ["postgres", "dendrite", "funnel"] : ["postgres", "dendrite", "acme"];
    if (args.funnel) {
      // Funnel is a Tailscale service (FACTS.md); settings refuse it with vpn: headscale.
      if (!(tailnet instanceof Tailnet)) throw new Error('ingress "funnel" needs vpn "tailscale"');
      tailnet.enableHttpsCertificates(`${name}-tailnet-https`);
      this.funnel = { tag: funnelTag, authKey: tailnet.deviceKey(`${name}-funnel-key`, funnelTag, `hardened-matrix ${args.stack} funnel`) };
    }
    this.volumes = purposes.map((purpose) => {
      const place = STORAGE_PLACEMENT[purpose];
      return {
        purpose,
        role: place.role,
        name: `${prefix}-${purpose}`,
        label: `hm-${purpose}`,
        sizeGib: place.sizeGib,
        node: nodeWith(args.nodes, place.role).name,
        description: `hardened-matrix ${args.stack}: ${place.why}`,
      };
    });

    const owners = new Promise<Partial<Record<StoragePurpose, string>>>((resolve) => (this.sealOwners = resolve));
    const userData: Record<string, pulumi.Output<string>> = {};
    for (const node of args.nodes) {
      userData[node.name] = pulumi.all([owners, authKeyFor(node.name)]).apply(([ownerOf, authKey]) => {
        const here = this.volumes.filter((v) => v.node === node.name);
        return renderCloudInit({
          hostname: node.name,
          dockerGid: args.dockerSocketGid,
          tailscale: { authKey, tags: [nodeTag], hostname: node.name, ssh: true, ...(loginServer ? { loginServer } : {}) },
          wireguard: { port: WIREGUARD_PORT, fromCidr: args.vpcRange },
          volumes: here.map((v) => ({ name: v.name, mountPoint: `/mnt/${v.name}`, fsType: "ext4" as const })),
          directories: here.filter((v) => ownerOf[v.purpose]).map((v) => ({ path: `/mnt/${v.name}/${v.purpose}`, owner: ownerOf[v.purpose]! })),
        });
      });
    }

    const edge = nodeWith(args.nodes, "edge");
    this.nodes = new Nodes(
      `${name}-nodes`,
      {
        region: args.region,
        vpcName: `${prefix}-vpc`,
        vpcRange: args.vpcRange,
        nodes: args.nodes.map((n) => ({ name: n.name, size: n.size, tags: [clusterTag, ...n.roles.map((r) => `${clusterTag}-${r}`)], generation: generations[n.name]! })),
        sshKeys: args.sshKeys,
        userData,
        volumes: this.volumes,
        reservedIpNodes: [edge.name],
        firewalls: firewallPlans({
          clusterTag,
          roleTag: (r) => `${clusterTag}-${r}`,
          httpPort: args.ports.http,
          httpsPort: args.ports.https,
          federationPort: args.ports.federation,
          turn: args.turn ? { port: args.turn.port, tlsPort: args.turn.tlsPort, minPort: args.turn.minPort, maxPort: args.turn.maxPort } : undefined,
          wireguardPort: WIREGUARD_PORT,
          publicIngress: args.funnel === undefined,
        }),
      },
      child,
    );

    const tailnetIpv4: Record<string, pulumi.Output<string>> = {};
    for (const node of args.nodes) tailnetIpv4[node.name] = this.tailnet.address(node.name, this.nodes.droplets[node.name]!);

    // Joining the tailnet comes before the end of bootstrap (Docker, volumes, swarm): wait for the
    // marker cloud-init writes last, over the same SSH path the docker provider uses.
    const bootstrapped = args.nodes.map(
      (node) =>
        new command.local.Command(
          `${name}-${node.name}-bootstrapped`,
          {
            // With Headscale the deployer joins during the first run: say how, rather than time out.
            create:
              tailnet instanceof HeadscaleServer
                ? pulumi.interpolate`${tailnetIpv4[node.name]!.apply((ip) => deployerOnTailnetCheck(DOCKER_SSH_OPTS, ip, deployerJoinCommand(tailnet.apiUrl, tailnet.adminKeyName)))}\n${bootstrapWaitCommand(tailnetIpv4[node.name]!)}`
                : bootstrapWaitCommand(tailnetIpv4[node.name]!),
            interpreter: ["/bin/sh", "-c"],
          },
          child,
        ),
    );
    // The mesh files travel over the tailnet once a node has bootstrapped; the swarm forms over the mesh.
    const meshIpv4 = Object.fromEntries(args.nodes.map((n) => [n.name, meshAddress(n.name, args.meshCidr)]));
    this.mesh = new WireGuardMesh(
      `${name}-mesh`,
      {
        listenPort: WIREGUARD_PORT,
        pskVersion: args.meshPskVersion,
        nodes: args.nodes.map((n, i) => ({
          name: n.name,
          meshAddress: meshIpv4[n.name]!,
          endpoint: this.nodes.privateIpv4[n.name]!,
          adminAddress: tailnetIpv4[n.name]!,
          machineId: this.nodes.dropletIds[n.name]!,
          keyVersion: n.meshKeyVersion ?? 1,
          ready: bootstrapped[i]!,
        })),
      },
      child,
    );
    this.swarm = new SwarmCluster(
      `${name}-swarm`,
      {
        addressPool: args.swarmAddressPool,
        // Stacks deployed before the swarm component had the provider directly under the platform.
        providerAliases: [{ name: `${name}-docker`, parent: this }],
        nodes: args.nodes.map((n) => ({
          name: n.name,
          roles: n.roles,
          meshAddress: meshIpv4[n.name]!,
          adminAddress: tailnetIpv4[n.name]!,
          machineId: this.nodes.dropletIds[n.name]!,
          meshReady: this.mesh.applied[n.name]!,
          holds: this.nodes.holds[n.name]!,
          mountPoints: this.nodes.mountPoints[n.name]!,
        })),
      },
      child,
    );
    // The deployer is on the tailnet; the Docker API is reached over SSH to the first manager, never published.
    this.provider = this.swarm.provider;

    const turnNode = args.turn ? nodeWith(args.nodes, "turn") : undefined;
    this.turnExternalIp = turnNode ? this.nodes.publicIpv4[turnNode.name]! : pulumi.output("");
    this.privateRanges = [args.vpcRange, args.swarmAddressPool, args.meshCidr];

    const edgeIpv4 = this.nodes.reservedIps[edge.name]!;
    this.dns = new Dns(
      `${name}-dns`,
      {
        zoneId: args.cloudflareZoneId,
        domain: args.domain,
        matrixFqdn: args.matrixFqdn,
        edgeIpv4,
        turn: args.turn && turnNode ? { fqdn: args.turn.fqdn, ipv4: this.nodes.publicIpv4[turnNode.name]! } : undefined,
        wellKnownFqdn: args.servesWellKnown ? args.serverName : undefined,
        srv: args.delegation === "srv" ? { serverName: args.serverName, port: args.ports.federation } : undefined,
        caa: { issuer: "letsencrypt.org", iodefEmail: args.acmeEmail || undefined },
        publicEdge: args.funnel === undefined,
      },
      child,
    );
    if (args.funnel) {
      new WellKnownWorker(
        `${name}-well-known`,
        { accountId: args.funnel.cloudflareAccountId, zoneId: args.cloudflareZoneId, serverName: args.serverName, documents: args.funnel.wellKnown, scriptName: `${prefix}-well-known` },
        child,
      );
    }

    // The Headscale control node and its 1 GiB state volume count too.
    const sizes = [...args.nodes.map((n) => n.size), ...(tailnet instanceof HeadscaleServer && controlNode ? [controlNode.size] : [])];
    const volumeGib = [...this.volumes.map((v) => v.sizeGib), ...(tailnet instanceof HeadscaleServer ? [1] : [])];
    // Live prices on a real deployment; the dated table in a preview (and as the fallback).
    const priceOf: pulumi.Output<(size: string) => number> = pulumi.runtime.isDryRun()
      ? pulumi.output(tablePrice)
      : digitalocean.getSizesOutput({}, child).sizes.apply((live) => {
          const prices = new Map(live.map((s) => [s.slug, s.priceMonthly]));
          return (size: string) => prices.get(size) ?? tablePrice(size);
        });

    this.outputs = {
      nodes: Object.fromEntries(
        args.nodes.map((n) => [
          n.name,
          { roles: n.roles, size: n.size, publicIpv4: this.nodes.publicIpv4[n.name]!, privateIpv4: this.nodes.privateIpv4[n.name]!, tailnetIpv4: tailnetIpv4[n.name]!, meshIpv4: meshIpv4[n.name]!, wireguardPublicKey: this.mesh.publicKeys[n.name]! },
        ]),
      ),
      edgeIpv4,
      ...(args.funnel ? { wellKnownServer: args.funnel.wellKnown.server, wellKnownClient: args.funnel.wellKnown.client } : {}),
      estimatedMonthlyCostUsd: priceOf.apply((price) => estimateMonthlyCost(sizes, volumeGib, 1, price, args.spacesBackups ?? false)),
      ...(tailnet instanceof HeadscaleServer
        ? {
            headscaleUrl: tailnet.apiUrl,
            headscaleIpv4: tailnet.publicIpv4,
            // The deployer's own device joins with this (README "Headscale mode"); single-use, one hour.
            headscaleAdminAuthKey: tailnet.adminAuthKey,
          }
        : {}),
    };
    this.registerOutputs({ edgeIpv4 });
  }

  /** Renders every node's cloud-init from the storage owners collected so far. Call once, after all services. */
  seal(): void {
    if (this.sealed) throw new Error("CloudPlatform.seal() called twice");
    this.sealed = true;
    this.sealOwners(Object.fromEntries(this.owners));
  }

  nodeMemoryMb(role: NodeRole): number {
    return DROPLET_SIZES[nodeWith(this.args.nodes, role).size].memoryMb;
  }

  storage(purpose: StoragePurpose, role: NodeRole, owner: string) {
    if (this.sealed) throw new Error(`storage("${purpose}") requested after the nodes' cloud-init was rendered`);
    const volume = this.volumes.find((v) => v.purpose === purpose);
    if (!volume) throw new Error(`no volume is planned for "${purpose}" on this stack`);
    if (volume.role !== role) throw new Error(`storage for "${purpose}" lives on the ${volume.role} node, not on the ${role} node`);
    const earlier = this.owners.get(purpose);
    if (earlier !== undefined && earlier !== owner) throw new Error(`storage for "${purpose}" is already owned by ${earlier}`);
    this.owners.set(purpose, owner);
    return { type: "bind", source: `/mnt/${volume.name}/${purpose}`, readOnly: false };
  }
}

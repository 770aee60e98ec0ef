import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import type { FirewallPlan } from "../render/firewall";

/** Debian stable: what the cloud-init renderer and the hardening assume. */
export const DROPLET_IMAGE = "debian-12-x64";

export interface NodeSpec {
  name: string;
  size: string;
  /** DigitalOcean tags (cluster tag and one per role). */
  tags: string[];
}

export interface VolumeSpec {
  /** DigitalOcean volume name (unique per region in the account). */
  name: string;
  /** ext4 label (at most 16 characters); cloud-init finds the volume by its DigitalOcean name. */
  label: string;
  sizeGib: number;
  /** Node the volume is attached to. */
  node: string;
  description: string;
}

export interface NodesArgs {
  region: pulumi.Input<string>;
  vpcName: pulumi.Input<string>;
  vpcRange: pulumi.Input<string>;
  nodes: NodeSpec[];
  sshKeys: pulumi.Input<pulumi.Input<string>[]>;
  /** Rendered cloud-init per node name; stored as a secret (it carries the VPN join key). */
  userData: Record<string, pulumi.Input<string>>;
  volumes: VolumeSpec[];
  /** Nodes that get a reserved IP (the edge: DNS must survive a droplet replacement). */
  reservedIpNodes: string[];
  firewalls: FirewallPlan[];
}

/**
 * The DigitalOcean layer: VPC, droplets, block-storage volumes, reserved IPs and cloud firewalls.
 * Droplets ignore later edits of their user data: cloud-init runs once, at first boot, so an edit
 * could only take effect by replacing the node. Day-2 changes reach a running node through the
 * docker provider (Swarm services, configs, secrets) over the tailnet instead.
 */
export class Nodes extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>;
  readonly droplets: Record<string, digitalocean.Droplet> = {};
  readonly dropletIds: Record<string, pulumi.Output<number>> = {};
  readonly publicIpv4: Record<string, pulumi.Output<string>> = {};
  readonly privateIpv4: Record<string, pulumi.Output<string>> = {};
  readonly reservedIps: Record<string, pulumi.Output<string>> = {};
  readonly volumeIds: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: NodesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:cloud:Nodes", name, {}, opts);
    const child = { parent: this };

    const vpc = new digitalocean.Vpc(`${name}-vpc`, { name: args.vpcName, region: args.region, ipRange: args.vpcRange, description: "hardened-matrix nodes" }, child);
    this.vpcId = vpc.id;

    // Tags exist before the droplets and firewalls that name them.
    const tags = new Map<string, digitalocean.Tag>();
    const tag = (t: string): pulumi.Output<string> => {
      let r = tags.get(t);
      if (!r) {
        r = new digitalocean.Tag(t, { name: t }, child);
        tags.set(t, r);
      }
      return r.name;
    };
    for (const t of [...args.nodes.flatMap((n) => n.tags), ...args.firewalls.flatMap((p) => p.tags)]) tag(t);

    for (const node of args.nodes) {
      const userData = args.userData[node.name];
      if (userData === undefined) throw new Error(`no user data for node ${node.name}`);
      const droplet = new digitalocean.Droplet(
        node.name,
        {
          name: node.name,
          image: DROPLET_IMAGE,
          size: node.size,
          region: args.region,
          vpcUuid: vpc.id,
          sshKeys: args.sshKeys,
          tags: node.tags.map(tag),
          userData: pulumi.secret(userData),
          monitoring: true,
          ipv6: true,
          // Re-sizing never grows the disk: a size can then be reverted.
          resizeDisk: false,
          gracefulShutdown: true,
        },
        // A user-data edit would replace the droplet; day-2 changes go through the docker provider.
        // additionalSecretOutputs: the policy pack sees options, not the secretness of inputs.
        { ...child, ignoreChanges: ["userData"], additionalSecretOutputs: ["userData"] },
      );
      this.droplets[node.name] = droplet;
      this.dropletIds[node.name] = droplet.id.apply((id) => Number(id));
      this.publicIpv4[node.name] = droplet.ipv4Address;
      this.privateIpv4[node.name] = droplet.ipv4AddressPrivate;
    }
    const dropletId = (node: string): pulumi.Output<number> => {
      const id = this.dropletIds[node];
      if (!id) throw new Error(`unknown node ${node}`);
      return id;
    };

    for (const v of args.volumes) {
      // Data outlives droplets and the stack: protected against deletion and kept if dropped.
      const volume = new digitalocean.Volume(
        v.name,
        { name: v.name, region: args.region, size: v.sizeGib, initialFilesystemType: "ext4", initialFilesystemLabel: v.label, description: v.description },
        // description is ForceNew (digitalocean/terraform-provider-digitalocean digitalocean/volume/resource_volume.go): an edit of its prose must never ask to replace a protected volume.
        { ...child, protect: true, retainOnDelete: true, ignoreChanges: ["description"] },
      );
      // A volume attaches to one droplet at a time: when its node is replaced, detach before re-attaching.
      new digitalocean.VolumeAttachment(`${v.name}-attachment`, { dropletId: dropletId(v.node), volumeId: volume.id }, { ...child, deleteBeforeReplace: true });
      this.volumeIds[v.name] = volume.id;
    }

    for (const node of args.reservedIpNodes) {
      // DNS points at this address: losing it would break every client's cached record.
      const ip = new digitalocean.ReservedIp(`${node}-ip`, { region: args.region }, { ...child, protect: true });
      // Deleting the old assignment after creating the new one would unassign the IP from the new droplet.
      new digitalocean.ReservedIpAssignment(`${node}-ip-assignment`, { ipAddress: ip.ipAddress, dropletId: dropletId(node) }, { ...child, deleteBeforeReplace: true });
      this.reservedIps[node] = ip.ipAddress;
    }

    // Firewalls apply to tags, so a replaced or added droplet is covered from its first boot.
    for (const plan of args.firewalls) {
      new digitalocean.Firewall(
        plan.name,
        {
          name: plan.name,
          tags: plan.tags.map(tag),
          inboundRules: plan.inbound.map((r) => ({ protocol: r.protocol, portRange: r.portRange, sourceAddresses: r.sourceAddresses, sourceTags: r.sourceTags?.map(tag) })),
          outboundRules: plan.outbound.map((r) => ({ protocol: r.protocol, portRange: r.portRange, destinationAddresses: r.destinationAddresses })),
        },
        child,
      );
    }

    this.registerOutputs({ vpcId: this.vpcId, publicIpv4: this.publicIpv4, reservedIps: this.reservedIps });
  }
}

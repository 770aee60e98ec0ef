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
  /**
   * The node's generation (cloud.ts): replacing it replaces the droplet (and the node's join key),
   * the one deliberate way a node gets a new machine.
   */
  generation?: pulumi.Resource;
}

/**
 * Droplet inputs that DigitalOcean can only apply by creating a new machine (ForceNew in
 * digitalocean/terraform-provider-digitalocean digitalocean/droplet/resource_droplet.go: image,
 * region, ssh_keys, user_data, monitoring, vpc_uuid ...) but that a running node does not need:
 * a change applies to nodes created or replaced later, never replaces one by itself (a replacement
 * is checked with the program's inputs, not the ignored old ones: pulumi/pulumi
 * pkg/resource/deploy/step_generator.go, Check with goal.Properties on replace). user_data
 * and ssh_keys are read once by cloud-init at first boot; image and monitoring are constants here.
 * region and vpc_uuid are not ignored: a node in another region or VPC is a new machine, and both
 * are refused earlier (region: the protected volumes; the VPC is protected).
 */
export const DROPLET_IGNORED_CHANGES = ["userData", "sshKeys", "image", "monitoring"];

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
 * docker provider (Swarm services, configs, secrets) over the tailnet instead. A node gets a new
 * machine only when its generation is replaced (one node, on purpose), and then delete-before-replace.
 */
export class Nodes extends pulumi.ComponentResource {
  readonly vpcId: pulumi.Output<string>;
  readonly droplets: Record<string, digitalocean.Droplet> = {};
  readonly dropletIds: Record<string, pulumi.Output<number>> = {};
  readonly publicIpv4: Record<string, pulumi.Output<string>> = {};
  readonly privateIpv4: Record<string, pulumi.Output<string>> = {};
  readonly reservedIps: Record<string, pulumi.Output<string>> = {};
  readonly volumeIds: Record<string, pulumi.Output<string>> = {};
  /** Per node: what ties a droplet to cloud state (volume attachments, reserved IP assignment); its teardown runs before these are deleted. */
  readonly holds: Record<string, pulumi.Resource[]> = {};
  /** Per node: where its volumes are mounted. */
  readonly mountPoints: Record<string, string[]> = {};

  constructor(name: string, args: NodesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:cloud:Nodes", name, {}, opts);
    const child = { parent: this };

    // ip_range and region are ForceNew (digitalocean/vpc/resource_vpc.go): a new VPC would replace
    // every droplet at once. Protected: the engine refuses that replacement before it starts.
    const vpc = new digitalocean.Vpc(`${name}-vpc`, { name: args.vpcName, region: args.region, ipRange: args.vpcRange, description: "hardened-matrix nodes" }, { ...child, protect: true });
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
        // No field that a running node does not need replaces it (DROPLET_IGNORED_CHANGES); a new
        // machine comes only from replacing its generation (or `--replace` of the droplet).
        // deleteBeforeReplace: the old node is torn down (drained, out of the swarm, volumes
        // unmounted; SwarmCluster's teardown) and deleted before its replacement takes its volumes,
        // mesh identity and address. With it the engine first deletes every dependent that the
        // replacement would replace, in reverse dependency order, then the droplet, then creates
        // (pulumi/pulumi pkg/resource/deploy/step_generator.go: deleteBeforeReplace,
        // calculateDependentReplacements); the default creates the new droplet first and deletes
        // the old one after every other step.
        // additionalSecretOutputs: the policy pack sees options, not the secretness of inputs.
        {
          ...child,
          ignoreChanges: DROPLET_IGNORED_CHANGES,
          deleteBeforeReplace: true,
          ...(node.generation ? { replaceWith: [node.generation] } : {}),
          additionalSecretOutputs: ["userData"],
        },
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

    for (const node of args.nodes) {
      this.holds[node.name] = [];
      this.mountPoints[node.name] = [];
    }
    for (const v of args.volumes) {
      // Data outlives droplets and the stack: protected against deletion and kept if dropped.
      const volume = new digitalocean.Volume(
        v.name,
        { name: v.name, region: args.region, size: v.sizeGib, initialFilesystemType: "ext4", initialFilesystemLabel: v.label, description: v.description },
        // description is ForceNew (digitalocean/terraform-provider-digitalocean digitalocean/volume/resource_volume.go): an edit of its prose must never ask to replace a protected volume.
        { ...child, protect: true, retainOnDelete: true, ignoreChanges: ["description"] },
      );
      // A volume attaches to one droplet at a time: when its node is replaced, detach before re-attaching.
      const attachment = new digitalocean.VolumeAttachment(`${v.name}-attachment`, { dropletId: dropletId(v.node), volumeId: volume.id }, { ...child, deleteBeforeReplace: true });
      this.holds[v.node]?.push(attachment);
      // Where cloud-init mounts it (cloud.ts renders /mnt/<volume name>).
      this.mountPoints[v.node]?.push(`/mnt/${v.name}`);
      this.volumeIds[v.name] = volume.id;
    }

    for (const node of args.reservedIpNodes) {
      // DNS points at this address: losing it would break every client's cached record.
      const ip = new digitalocean.ReservedIp(`${node}-ip`, { region: args.region }, { ...child, protect: true });
      // Deleting the old assignment after creating the new one would unassign the IP from the new droplet.
      const assignment = new digitalocean.ReservedIpAssignment(`${node}-ip-assignment`, { ipAddress: ip.ipAddress, dropletId: dropletId(node) }, { ...child, deleteBeforeReplace: true });
      this.holds[node]?.push(assignment);
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

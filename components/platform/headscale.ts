import * as cloudflare from "@pulumi/cloudflare";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { renderHeadscaleConfig, renderHeadscalePolicy, type AcmeCa } from "../render/headscale";
import { BLOB_NAME, generateSealingKeyPair, openSealedApiKey } from "../render/headscaleBootstrap";
import { renderHeadscaleCloudInit } from "../render/headscaleCloudInit";
import { headscaleFirewallPlan } from "../render/headscaleFirewall";
import type { TailnetPolicyInput } from "../render/tailscaleAcl";
import { DNS_TTL } from "./dns";
import { HeadscaleDirectory } from "./headscaleApi";
import { HeadscalePreAuthKey } from "./headscaleKeys";
import { DEFAULT_DEVICE_WAIT, waitForDevice } from "./tailnet";
import { DROPLET_IMAGE } from "./nodes";

/** How long the node serves the sealed blob after Headscale's first start. */
export const BOOTSTRAP_WINDOW_SECONDS = 1800;
/** Lifetime of the handed-over API key; rotate by replacing the handover (see README). */
export const API_KEY_EXPIRY = "90d";

/** An RSA key pair made once and kept in state; the private half is a secret output. */
const sealingKeyProvider: pulumi.dynamic.ResourceProvider = {
  async create() {
    const { publicKeyPem, privateKeyPem } = generateSealingKeyPair();
    return { id: `sealing-${Date.now().toString(36)}`, outs: { publicKeyPem, privateKeyPem } };
  },
};

class SealingKey extends pulumi.dynamic.Resource {
  declare readonly publicKeyPem: pulumi.Output<string>;
  declare readonly privateKeyPem: pulumi.Output<string>;
  constructor(name: string, opts?: pulumi.CustomResourceOptions) {
    super(sealingKeyProvider, name, { publicKeyPem: undefined, privateKeyPem: undefined }, { ...opts, additionalSecretOutputs: ["privateKeyPem"] }, "headscale", "SealingKey");
  }
}

interface HandoverInputs {
  blobUrl: string;
  privateKeyPem: string;
  timeoutMs: number;
}

/** Polls `blobUrl` until the sealed blob is there, then opens it (throws after `timeoutMs`). */
export async function fetchSealedApiKey(blobUrl: string, privateKeyPem: string, timeoutMs: number, intervalMs = 5000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer yet";
  for (;;) {
    try {
      const res = await fetch(blobUrl, { signal: AbortSignal.timeout(10_000) });
      if (res.ok) return openSealedApiKey(Buffer.from(await res.arrayBuffer()), privateKeyPem);
      last = `HTTP ${res.status}`;
    } catch (e) {
      if ((e as Error).message.includes("bootstrap blob")) throw e;
      last = (e as Error).message;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `the Headscale node did not hand over its API key at ${blobUrl} within ${Math.round(timeoutMs / 1000)} s (last: ${last}); ` +
          `it serves the sealed key for ${BOOTSTRAP_WINDOW_SECONDS} s after Headscale first starts. See README "Headscale mode" to recover.`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The handed-over API key, kept in state as a secret so later runs need no blob. */
export const handoverProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: HandoverInputs) {
    const apiKey = await fetchSealedApiKey(inputs.blobUrl, inputs.privateKeyPem, inputs.timeoutMs);
    return { id: apiKey.slice(0, "hskey-api-".length + 12), outs: { blobUrl: inputs.blobUrl, apiKey } };
  },
  async diff(_id: string, olds: { blobUrl: string }, news: HandoverInputs) {
    // A new node (new address) makes a new key; a new sealing key alone changes nothing already opened.
    return { changes: olds.blobUrl !== news.blobUrl, replaces: olds.blobUrl !== news.blobUrl ? ["blobUrl"] : [] };
  },
};

class ApiKeyHandover extends pulumi.dynamic.Resource {
  declare readonly apiKey: pulumi.Output<string>;
  constructor(name: string, args: { blobUrl: pulumi.Input<string>; privateKeyPem: pulumi.Input<string>; timeoutMs: number }, opts?: pulumi.CustomResourceOptions) {
    super(handoverProvider, name, { ...args, privateKeyPem: pulumi.secret(args.privateKeyPem), apiKey: undefined }, { ...opts, additionalSecretOutputs: ["apiKey"] }, "headscale", "ApiKeyHandover");
  }
}

interface NodeAddressInputs {
  apiUrl: string;
  apiKey: string;
  hostname: string;
  tag: string;
  notBefore: string;
  timeoutMs: number;
}

/**
 * A node's tailnet IPv4 once it has joined Headscale, found as tailnet.ts finds Tailscale devices:
 * exactly this hostname (givenName), carrying the tag, created no earlier than the droplet.
 */
export const nodeAddressProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: NodeAddressInputs) {
    const api = new HeadscaleDirectory(inputs.apiUrl, inputs.apiKey);
    const list = async () =>
      (await api.listNodes()).map((n) => ({ hostname: n.givenName ?? n.name, tags: n.tags, created: n.createdAt ?? "1970-01-01T00:00:00Z", addresses: n.ipAddresses, id: n.id }));
    const device = await waitForDevice(list, inputs.hostname, inputs.tag, inputs.notBefore, { ...DEFAULT_DEVICE_WAIT, timeoutMs: inputs.timeoutMs });
    const ipv4 = device.addresses.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a));
    if (!ipv4) throw new Error(`Headscale node ${inputs.hostname} has no IPv4 address (${device.addresses.join(", ")})`);
    return { id: device.id, outs: { ...inputs, ipv4 } };
  },
  async diff(_id: string, olds: NodeAddressInputs, news: NodeAddressInputs) {
    const replaces = (["hostname", "tag", "notBefore", "apiUrl"] as const).filter((k) => olds[k] !== news[k]);
    return { changes: replaces.length > 0 || olds.apiKey !== news.apiKey, replaces };
  },
  async update(_id: string, olds: NodeAddressInputs & { ipv4: string }, news: NodeAddressInputs) {
    return { outs: { ...olds, apiKey: news.apiKey } };
  },
};

class HeadscaleNodeAddress extends pulumi.dynamic.Resource {
  declare readonly ipv4: pulumi.Output<string>;
  constructor(name: string, args: { [K in keyof NodeAddressInputs]: pulumi.Input<NodeAddressInputs[K]> }, opts?: pulumi.CustomResourceOptions) {
    super(nodeAddressProvider, name, { ...args, apiKey: pulumi.secret(args.apiKey), ipv4: undefined }, { ...opts, additionalSecretOutputs: ["apiKey"] }, "headscale", "NodeAddress");
  }
}

/**
 * The one command the deployer runs to join the Headscale tailnet on the first `pulumi up`. The
 * admin key is read from the state (resource outputs are saved even when the run stops early, stack
 * outputs only at its end). `adminKeyName` is the admin key resource's name.
 */
export function deployerJoinCommand(loginServer: string, adminKeyName: string): string {
  return (
    `tailscale up --login-server=${loginServer} --auth-key="$(pulumi stack export --show-secrets | ` +
    `jq -r '.deployment.resources[] | select(.urn | endswith("::${adminKeyName}")) | .outputs.key')"`
  );
}

/**
 * Runs before a node's first SSH step: if this machine cannot reach the node over the tailnet, stop
 * at once with the command that fixes it, instead of waiting out SSH timeouts.
 */
export function deployerOnTailnetCheck(sshOpts: string[], address: string, joinCommand: string): string {
  const message = `This machine is not on the Headscale tailnet yet (no SSH to ${address}). Run:\n  ${joinCommand}\nthen run pulumi up again.`;
  return `if ! ssh ${sshOpts.join(" ")} -o ConnectTimeout=20 root@${address} true; then printf '%b\n' '${message.replace(/'/g, "'\\''")}' >&2; exit 1; fi`;
}

export interface HeadscaleServerArgs {
  stack: string;
  region: pulumi.Input<string>;
  /** Unset: DigitalOcean's default VPC. The control node needs no private network: it speaks only public 443. */
  vpcId?: pulumi.Input<string>;
  node: { name: string; size: string };
  fqdn: string;
  zoneId: pulumi.Input<string>;
  image: string;
  acmeEmail: string;
  acmeCa: AcmeCa;
  derp: boolean;
  policy: TailnetPolicyInput;
  /** How long `pulumi up` waits for the handover (droplet boot, apt, image pull, ACME). */
  handoverTimeoutMs?: number;
}

/**
 * The Headscale control node: its droplet, retained state volume, firewall (80/443 only, plus
 * 3478/udp with DERP), A record, and the API key it hands over sealed at first boot.
 */
export class HeadscaleServer extends pulumi.ComponentResource {
  readonly apiUrl: string;
  readonly apiKey: pulumi.Output<string>;
  readonly publicIpv4: pulumi.Output<string>;
  /** Pre-auth key of the first admin's own device: what the deployer joins the tailnet with. */
  readonly adminAuthKey: pulumi.Output<string>;
  readonly nodeTag: string;
  /** Name of the deployer's key resource (deployerJoinCommand reads it from the state). */
  readonly adminKeyName: string;
  private readonly name: string;

  constructor(name: string, args: HeadscaleServerArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:vpn:HeadscaleServer", name, {}, opts);
    const child = { parent: this };
    this.apiUrl = `https://${args.fqdn}`;
    const tag = `hm-${args.stack}-headscale`.replace(/[^A-Za-z0-9:_-]/g, "-");

    const sealing = new SealingKey(`${name}-sealing`, child);
    // Retained: the database and noise key outlive the droplet (clients keep their identity).
    const volume = new digitalocean.Volume(
      `${name}-state`,
      { region: args.region, name: `hm-${args.stack}-headscale`, size: 1, initialFilesystemType: "ext4", description: "Headscale database and noise key" },
      { ...child, protect: true, retainOnDelete: true },
    );
    const userData = pulumi
      .all([sealing.publicKeyPem, volume.name])
      .apply(([publicKeyPem, volumeName]) =>
        renderHeadscaleCloudInit({
          hostname: args.node.name,
          image: args.image,
          configYaml: renderHeadscaleConfig({ serverFqdn: args.fqdn, acmeEmail: args.acmeEmail, acmeCa: args.acmeCa, derp: args.derp }),
          policyHujson: renderHeadscalePolicy(args.policy),
          volumeName,
          derp: args.derp,
          bootstrap: { sealingPublicKeyPem: publicKeyPem, admins: args.policy.admins, apiKeyExpiry: API_KEY_EXPIRY, windowSeconds: BOOTSTRAP_WINDOW_SECONDS },
        }),
      );
    const droplet = new digitalocean.Droplet(
      `${name}-node`,
      { name: args.node.name, region: args.region as pulumi.Input<digitalocean.Region>, size: args.node.size, image: DROPLET_IMAGE, ...(args.vpcId ? { vpcUuid: args.vpcId } : {}), userData, tags: [tag], monitoring: true, ipv6: false },
      // cloud-init runs once: a later edit could only apply by replacing the node.
      { ...child, ignoreChanges: ["userData"], additionalSecretOutputs: ["userData"] },
    );
    new digitalocean.VolumeAttachment(`${name}-state-attach`, { dropletId: droplet.id.apply(Number), volumeId: volume.id }, child);
    const plan = headscaleFirewallPlan({ tag, derp: args.derp });
    new digitalocean.Firewall(
      `${name}-fw`,
      {
        name: plan.name,
        tags: plan.tags,
        inboundRules: plan.inbound.map((r) => ({ protocol: r.protocol, portRange: r.portRange, sourceAddresses: r.sourceAddresses })),
        outboundRules: plan.outbound.map((r) => ({ protocol: r.protocol, portRange: r.portRange, destinationAddresses: r.destinationAddresses })),
      },
      { ...child, dependsOn: [droplet] },
    );
    this.publicIpv4 = droplet.ipv4Address;
    // ACME (TLS-ALPN-01) needs the name to resolve to this node before Headscale asks for a certificate.
    new cloudflare.DnsRecord(`${name}-a`, { zoneId: args.zoneId, name: args.fqdn, type: "A", content: droplet.ipv4Address, ttl: DNS_TTL, proxied: false, comment: "hardened-matrix headscale" }, child);
    const handover = new ApiKeyHandover(
      `${name}-apikey`,
      { blobUrl: pulumi.interpolate`http://${droplet.ipv4Address}/${BLOB_NAME}`, privateKeyPem: sealing.privateKeyPem, timeoutMs: args.handoverTimeoutMs ?? 20 * 60_000 },
      child,
    );
    this.apiKey = pulumi.secret(handover.apiKey);
    this.name = name;
    this.nodeTag = args.policy.nodeTag;
    this.adminKeyName = `${name}-admin-key`;
    const admin = new HeadscalePreAuthKey(this.adminKeyName, { apiUrl: this.apiUrl, apiKey: this.apiKey, tags: [], userEmail: args.policy.admins[0]! }, child);
    this.adminAuthKey = pulumi.secret(admin.key);
    this.registerOutputs({ apiUrl: this.apiUrl, publicIpv4: this.publicIpv4 });
  }

  /** A tagged, single-use, one-hour key for one cluster node. */
  authKeyFor(nodeName: string, opts: { replaceWith?: pulumi.Resource[] } = {}): pulumi.Output<string> {
    // replaceWith: the node's generation (cloud.ts), so a new or replaced droplet gets a fresh key.
    const key = new HeadscalePreAuthKey(`${this.name}-${nodeName}-key`, { apiUrl: this.apiUrl, apiKey: this.apiKey, tags: [this.nodeTag] }, { parent: this, ...(opts.replaceWith ? { replaceWith: opts.replaceWith } : {}) });
    return pulumi.secret(key.key);
  }

  /** The tailnet IPv4 of the node `hostname` once it has joined (waits up to 10 minutes). */
  address(hostname: string, machine: { createdAt: pulumi.Input<string> }): pulumi.Output<string> {
    const found = new HeadscaleNodeAddress(
      `${this.name}-${hostname}-address`,
      { apiUrl: this.apiUrl, apiKey: this.apiKey, hostname, tag: this.nodeTag, notBefore: machine.createdAt, timeoutMs: DEFAULT_DEVICE_WAIT.timeoutMs },
      { parent: this },
    );
    return found.ipv4;
  }
}

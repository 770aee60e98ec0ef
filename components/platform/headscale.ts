import * as cloudflare from "@pulumi/cloudflare";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { renderHeadscaleConfig, renderHeadscalePolicy, type AcmeCa } from "../render/headscale";
import { BLOB_NAME, generateSealingKeyPair, openSealedApiKey } from "../render/headscaleBootstrap";
import { renderHeadscaleCloudInit } from "../render/headscaleCloudInit";
import { headscaleFirewallPlan } from "../render/headscaleFirewall";
import type { TailnetPolicyInput } from "../render/tailscaleAcl";
import { DNS_TTL } from "./dns";
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

export interface HeadscaleServerArgs {
  stack: string;
  region: pulumi.Input<string>;
  vpcId: pulumi.Input<string>;
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
      { name: args.node.name, region: args.region as pulumi.Input<digitalocean.Region>, size: args.node.size, image: DROPLET_IMAGE, vpcUuid: args.vpcId, userData, tags: [tag], monitoring: true, ipv6: false },
      // cloud-init runs once: a later edit could only apply by replacing the node.
      { ...child, ignoreChanges: ["userData"] },
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
    this.registerOutputs({ apiUrl: this.apiUrl, publicIpv4: this.publicIpv4 });
  }
}

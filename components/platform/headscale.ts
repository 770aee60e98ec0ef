import * as cloudflare from "@pulumi/cloudflare";
import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";
import { renderHeadscaleConfig, renderHeadscalePolicy, type AcmeCa } from "../render/headscale";
import { BLOB_NAME, generateSealingKeyPair, openSealedApiKey } from "../render/headscaleBootstrap";
import { renderHeadscaleCloudInit } from "../render/headscaleCloudInit";
import { headscaleFirewallPlan } from "../render/headscaleFirewall";
import type { TailnetPolicyInput } from "../render/tailscaleAcl";
import { DNS_TTL } from "./dns";
import { apiKeyListPrefix, HeadscaleApi, HeadscaleApiError, HeadscaleDirectory } from "./headscaleApi";
import { HeadscalePreAuthKey } from "./headscaleKeys";
import { DEFAULT_DEVICE_WAIT, waitForDevice } from "./tailnet";
import { DROPLET_IMAGE } from "./nodes";

/** How long the node serves the sealed blob after Headscale's first start. */
export const BOOTSTRAP_WINDOW_SECONDS = 1800;
/** Lifetime of every API key this program holds (the bootstrap's, and each renewal's). */
export const API_KEY_LIFETIME_DAYS = 90;
export const API_KEY_EXPIRY = `${API_KEY_LIFETIME_DAYS}d`;
/** A `pulumi up` within this many days of the key's expiry renews it (README "Headscale mode"). */
export const API_KEY_RENEW_DAYS = 30;
const DAY_MS = 86_400_000;

interface SealingKeyOutputs {
  publicKeyPem?: string;
  privateKeyPem?: string;
}

/**
 * An RSA key pair made once and kept in state; the private half is a secret output. It has no
 * inputs, so nothing but its loss may change it. Without `diff` the host answers DIFF_UNKNOWN, the
 * engine then compares the inputs, `__provider` (this code, serialized) included, and plans an
 * Update; without `update` the host stores only `{__provider}` as outputs (pulumi/pulumi
 * sdk/nodejs/cmd/dynamic-provider/index.js diff/update; pkg/resource/deploy/step_generator.go
 * diffResource): an edit of this file or an SDK bump would wipe the key.
 */
export const sealingKeyProvider: pulumi.dynamic.ResourceProvider = {
  async create() {
    const { publicKeyPem, privateKeyPem } = generateSealingKeyPair();
    return { id: `sealing-${Date.now().toString(36)}`, outs: { publicKeyPem, privateKeyPem } };
  },
  async diff(_id: string, olds: SealingKeyOutputs) {
    // A state that already lost the pair (the old defect) gets a new one; otherwise never a change.
    const lost = !olds.publicKeyPem || !olds.privateKeyPem;
    return { changes: lost, replaces: lost ? ["privateKeyPem"] : [] };
  },
  async update(_id: string, olds: SealingKeyOutputs) {
    // Never planned by `diff`; if the engine asks anyway, the pair stays.
    return { outs: { publicKeyPem: olds.publicKeyPem, privateKeyPem: olds.privateKeyPem } };
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
  /** https://<headscale fqdn>: where the key is renewed. */
  apiUrl: string;
}

interface HandoverOutputs {
  blobUrl: string;
  apiKey: string;
  apiUrl?: string;
  /** RFC 3339; a lower bound until the API has been asked (absent in states made before renewal). */
  expiration?: string;
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

/** Whether a key expiring at `expiration` is to be renewed at `now` (unknown expiration: ask). */
export function apiKeyRenewalDue(expiration: string | undefined, now: number): boolean {
  return expiration === undefined || Date.parse(expiration) - now <= API_KEY_RENEW_DAYS * DAY_MS;
}

/**
 * Keeps the API key alive: Headscale refuses a key past its expiration (hscontrol/db/api_key.go
 * ValidateAPIKey) and the bootstrap hands one over only once. Looks up the key's real expiration
 * (GET /api/v1/apikey); if it is due, creates a new key with the current one (POST /api/v1/apikey),
 * proves the new key works, then expires the old one with it (POST /api/v1/apikey/expire).
 */
export async function renewApiKey(apiUrl: string, apiKey: string, now: number): Promise<{ apiKey: string; expiration?: string }> {
  const api = new HeadscaleApi(apiUrl, apiKey);
  let keys;
  try {
    keys = await api.listApiKeys();
  } catch (e) {
    if (e instanceof HeadscaleApiError && e.status === 401) {
      throw new Error(`${e.message}. The Headscale API key in state has expired or was revoked, so it cannot renew itself: see README "Headscale mode", "The API key".`);
    }
    throw e;
  }
  const own = keys.find((k) => k.prefix === apiKeyListPrefix(apiKey));
  if (!own) throw new Error(`Headscale does not list the API key ${apiKeyListPrefix(apiKey)} that it accepted`);
  if (!apiKeyRenewalDue(own.expiration ?? "9999-12-31T00:00:00Z", now)) return { apiKey, ...(own.expiration ? { expiration: own.expiration } : {}) };
  const expiration = new Date(now + API_KEY_LIFETIME_DAYS * DAY_MS).toISOString();
  const fresh = await api.createApiKey(expiration);
  try {
    const next = new HeadscaleApi(apiUrl, fresh);
    const listed = (await next.listApiKeys()).find((k) => k.prefix === apiKeyListPrefix(fresh));
    await next.expireApiKey(own.id);
    return { apiKey: fresh, expiration: listed?.expiration ?? expiration };
  } catch (e) {
    // The new key never reaches state: make it useless too, keep the old one, and fail the run.
    const created = (await api.listApiKeys().catch(() => [])).find((k) => k.prefix === apiKeyListPrefix(fresh));
    if (created) await api.expireApiKey(created.id).catch(() => undefined);
    throw e;
  }
}

/**
 * The API key: handed over once by the bootstrap, then kept in state as a secret and renewed by
 * any `pulumi up` in the last API_KEY_RENEW_DAYS of its life (the resources that use it follow in
 * the same run: their apiKey input updates in place).
 */
export const handoverProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: HandoverInputs) {
    const fetchedAt = Date.now();
    const apiKey = await fetchSealedApiKey(inputs.blobUrl, inputs.privateKeyPem, inputs.timeoutMs);
    // The bootstrap made the key at most one window before serving it: a lower bound of its expiry.
    const expiration = new Date(fetchedAt - BOOTSTRAP_WINDOW_SECONDS * 1000 + API_KEY_LIFETIME_DAYS * DAY_MS).toISOString();
    const outs: HandoverOutputs = { blobUrl: inputs.blobUrl, apiUrl: inputs.apiUrl, apiKey, expiration };
    return { id: apiKey.slice(0, "hskey-api-".length + 12), outs };
  },
  async diff(_id: string, olds: HandoverOutputs, news: HandoverInputs) {
    // A new node (new address) hands over a new key; a new sealing key alone changes nothing already opened.
    if (olds.blobUrl !== news.blobUrl) return { changes: true, replaces: ["blobUrl"] };
    return { changes: olds.apiUrl !== news.apiUrl || apiKeyRenewalDue(olds.expiration, Date.now()), replaces: [] };
  },
  async update(_id: string, olds: HandoverOutputs, news: HandoverInputs) {
    const now = Date.now();
    if (!apiKeyRenewalDue(olds.expiration, now) && olds.apiUrl === news.apiUrl) return { outs: { ...olds } };
    const renewed = await renewApiKey(news.apiUrl, olds.apiKey, now);
    const outs: HandoverOutputs = { blobUrl: olds.blobUrl, apiUrl: news.apiUrl, ...renewed };
    return { outs };
  },
};

class ApiKeyHandover extends pulumi.dynamic.Resource {
  declare readonly apiKey: pulumi.Output<string>;
  declare readonly expiration: pulumi.Output<string>;
  constructor(name: string, args: { blobUrl: pulumi.Input<string>; privateKeyPem: pulumi.Input<string>; timeoutMs: number; apiUrl: string }, opts?: pulumi.CustomResourceOptions) {
    super(handoverProvider, name, { ...args, privateKeyPem: pulumi.secret(args.privateKeyPem), apiKey: undefined, expiration: undefined }, { ...opts, additionalSecretOutputs: ["apiKey"] }, "headscale", "ApiKeyHandover");
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
 * exactly this hostname, carrying the tag, created no earlier than the droplet, the newest if several.
 * The hostname is v1Node `name` (types/node.go Proto: Name = node.Hostname), never `givenName`:
 * Headscale 0.29 keeps given names unique, so a replacement that joins while the old node is still
 * listed is given `hm-prod-2-1` (hscontrol/state/node_store.go resolveGivenName).
 */
export const nodeAddressProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: NodeAddressInputs) {
    const api = new HeadscaleDirectory(inputs.apiUrl, inputs.apiKey);
    const list = async () =>
      (await api.listNodes()).map((n) => ({ hostname: n.name, tags: n.tags, created: n.createdAt ?? "1970-01-01T00:00:00Z", addresses: n.ipAddresses, id: n.id }));
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
  /** When the API key in state expires (RFC 3339; renewed by any `pulumi up` in its last 30 days). */
  readonly apiKeyExpiration: pulumi.Output<string>;
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
      // cloud-init runs once: a later edit could only apply by replacing the node. A replaced node is
      // gone before its successor exists: one Headscale, one holder of the state volume at a time.
      { ...child, ignoreChanges: ["userData"], additionalSecretOutputs: ["userData"], deleteBeforeReplace: true },
    );
    // droplet_id is ForceNew and a volume attaches to one droplet at a time
    // (digitalocean/terraform-provider-digitalocean digitalocean/volume/resource_volume_attachment.go):
    // the old attachment must go before the new one, or the replacement's attach fails.
    new digitalocean.VolumeAttachment(`${name}-state-attach`, { dropletId: droplet.id.apply(Number), volumeId: volume.id }, { ...child, deleteBeforeReplace: true });
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
      { blobUrl: pulumi.interpolate`http://${droplet.ipv4Address}/${BLOB_NAME}`, privateKeyPem: sealing.privateKeyPem, timeoutMs: args.handoverTimeoutMs ?? 20 * 60_000, apiUrl: this.apiUrl },
      child,
    );
    this.apiKey = pulumi.secret(handover.apiKey);
    this.apiKeyExpiration = handover.expiration;
    this.name = name;
    this.nodeTag = args.policy.nodeTag;
    this.adminKeyName = `${name}-admin-key`;
    const admin = new HeadscalePreAuthKey(this.adminKeyName, { apiUrl: this.apiUrl, apiKey: this.apiKey, tags: [], userEmail: args.policy.admins[0]! }, child);
    this.adminAuthKey = pulumi.secret(admin.key);
    this.registerOutputs({ apiUrl: this.apiUrl, publicIpv4: this.publicIpv4, apiKeyExpiration: this.apiKeyExpiration });
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

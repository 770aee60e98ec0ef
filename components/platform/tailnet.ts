import * as pulumi from "@pulumi/pulumi";
import * as tailscale from "@pulumi/tailscale";

/** One hour: long enough for a droplet to boot and join, useless soon after (it sits in user data). */
export const AUTH_KEY_EXPIRY_SECONDS = 3600;

export interface TailnetArgs {
  /** The tailnet policy (HuJSON/JSON) this program owns. */
  policy: pulumi.Input<string>;
  /** Tag every node joins with. */
  nodeTag: string;
  description: pulumi.Input<string>;
}

/**
 * The tailnet side of admin access: the policy (who may reach which node on which port) and one
 * pre-authorized, tagged, single-use join key per node. Keys are created after the policy,
 * because a tag must have an owner in the policy before a key can carry it.
 */
export class Tailnet extends pulumi.ComponentResource {
  readonly nodeTag: string;
  private readonly acl: tailscale.Acl;
  private readonly description: pulumi.Input<string>;
  private readonly name: string;

  constructor(name: string, args: TailnetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:vpn:Tailnet", name, {}, opts);
    this.name = name;
    this.nodeTag = args.nodeTag;
    this.description = args.description;
    // The program owns the whole tailnet policy: it replaces what was there on the first run.
    this.acl = new tailscale.Acl(`${name}-acl`, { acl: args.policy, overwriteExistingContent: true }, { parent: this });
    this.registerOutputs({ nodeTag: this.nodeTag });
  }

  /**
   * The join key the node `node` boots with: its own, single-use, one hour, created in the same
   * deployment as the droplet that carries it. `replaceWith` is the node's generation, which the
   * droplet is replaced with too: a new or replaced droplet always carries a key created just
   * before it. A shared reusable key would be expired for a node created an hour later, and
   * `recreateIfInvalid` cannot help: `invalid` is set only by Read, i.e. a refresh, which nothing
   * runs (tailscale/terraform-provider-tailscale tailscale/resource_tailnet_key.go Read, ModifyPlan).
   * "never": a refresh finds a used or expired key invalid; recreating it would change nothing
   * (the droplet ignores its user data) but churn keys.
   */
  authKeyFor(node: string, opts: { replaceWith?: pulumi.Resource[] } = {}): pulumi.Output<string> {
    const key = new tailscale.TailnetKey(
      `${this.name}-${node}-key`,
      {
        reusable: false,
        ephemeral: false,
        preauthorized: true,
        expiry: AUTH_KEY_EXPIRY_SECONDS,
        tags: [this.nodeTag],
        description: this.description,
        recreateIfInvalid: "never",
      },
      { parent: this, dependsOn: [this.acl], ...(opts.replaceWith ? { replaceWith: opts.replaceWith } : {}) },
    );
    return pulumi.secret(key.key);
  }

  /**
   * Turns on HTTPS certificates for the tailnet's ts.net names, which Funnel needs. Only that field
   * is sent: the provider leaves every setting it is not given untouched, and deleting the resource
   * changes nothing (tailscale/terraform-provider-tailscale tailscale/resource_tailnet_settings.go:
   * Optional+Computed fields, nil when unknown; Delete is a no-op). MagicDNS, which HTTPS also
   * needs, is on by default and left to the admin (its resource turns it off on delete).
   */
  enableHttpsCertificates(name: string): void {
    new tailscale.TailnetSettings(name, { httpsEnabled: true }, { parent: this });
  }

  /**
   * A single-use, pre-authorized key for one more device carrying `tag` (which the policy must own),
   * e.g. the Funnel container. Single use: the device keeps its identity in its state directory and
   * never logs in again (containerboot TS_AUTH_ONCE); the key expires within the hour either way.
   * Never recreated by a refresh: a new key would change the Swarm secret and restart the service
   * (the only ingress) for a key it never uses. A device that lost its state needs
   * `pulumi up --replace <this key's urn>`.
   */
  deviceKey(name: string, tag: string, description: pulumi.Input<string>): pulumi.Output<string> {
    const key = new tailscale.TailnetKey(
      name,
      { reusable: false, ephemeral: false, preauthorized: true, expiry: AUTH_KEY_EXPIRY_SECONDS, tags: [tag], description, recreateIfInvalid: "never" },
      { parent: this, dependsOn: [this.acl] },
    );
    return pulumi.secret(key.key);
  }

  /**
   * The tailnet IPv4 address of the machine `hostname` that was created at `machine.createdAt`,
   * waiting (up to 10 minutes) until it has joined. A replaced droplet leaves its old device in the
   * tailnet under the same hostname (tagged devices do not expire), and the provider's getDevice
   * returns the first device with that hostname (tailscale/terraform-provider-tailscale
   * tailscale/data_source_device.go Read: first match, no order), so the old, dead one may win.
   * Here: the newest device with exactly this hostname and our tag, created no earlier than the
   * machine. While the machine is being created or replaced its `createdAt` is unknown, so a
   * preview looks nothing up; a preview of an existing machine looks once and does not wait.
   */
  address(hostname: string, machine: { createdAt: pulumi.Input<string> }, wait: DeviceWait = DEFAULT_DEVICE_WAIT): pulumi.Output<string> {
    // getDevices has no wait of its own; the provider lists every device of the tailnet
    // (tailscale/data_source_devices.go), and the match is ours, not a name prefix.
    const list = async () => (await tailscale.getDevices({}, { parent: this })).devices ?? [];
    return pulumi
      .output(machine.createdAt)
      .apply((createdAt) => waitForDevice(list, hostname, this.nodeTag, createdAt, pulumi.runtime.isDryRun() ? { ...wait, timeoutMs: 0 } : wait))
      .apply(tailnetIpv4);
  }
}

/** Polls `list` until `joinedDevice` finds the machine's device; fails after `wait.timeoutMs` (0: one look). */
export async function waitForDevice<D extends Device>(list: () => Promise<D[]>, hostname: string, tag: string, notBefore: string, wait: DeviceWait): Promise<D> {
  const deadline = Date.now() + wait.timeoutMs;
  for (;;) {
    const device = joinedDevice(await list(), hostname, tag, notBefore);
    if (device) return device;
    if (Date.now() >= deadline) {
      throw new Error(
        `tailnet device ${hostname} (tag ${tag}) created at or after ${notBefore} has not joined` +
          (wait.timeoutMs > 0 ? ` within ${wait.timeoutMs / 1000} s` : "") +
          "; older devices of that name do not count. A node whose droplet was created with an expired or used join key never joins:" +
          " replace its generation (README, Replacing a node), not only its droplet",
      );
    }
    await new Promise((resolve) => setTimeout(resolve, wait.intervalMs));
  }
}

export interface DeviceWait {
  timeoutMs: number;
  intervalMs: number;
}
/** About as long as droplets take to boot and join, polled gently (the API is rate limited). */
export const DEFAULT_DEVICE_WAIT: DeviceWait = { timeoutMs: 10 * 60_000, intervalMs: 5_000 };

type Device = Pick<tailscale.types.output.GetDevicesDevice, "hostname" | "tags" | "created" | "addresses">;

/**
 * The device a machine created at `notBefore` joined as: exactly `hostname`, carrying `tag`, created
 * no earlier than the machine (RFC 3339 times, compared as instants), the newest if several.
 */
export function joinedDevice<D extends Device>(devices: D[], hostname: string, tag: string, notBefore: string): D | undefined {
  const since = Date.parse(notBefore);
  if (Number.isNaN(since)) throw new Error(`machine creation time "${notBefore}" is not an RFC 3339 time`);
  return devices
    .filter((d) => d.hostname === hostname && (d.tags ?? []).includes(tag) && Date.parse(d.created) >= since)
    .sort((a, b) => Date.parse(b.created) - Date.parse(a.created))[0];
}

function tailnetIpv4(device: Device): string {
  const v4 = device.addresses.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a));
  if (!v4) throw new Error(`tailnet device ${device.hostname} has no IPv4 address (${device.addresses.join(", ")})`);
  return v4;
}

import * as pulumi from "@pulumi/pulumi";
import * as tailscale from "@pulumi/tailscale";

/** One hour: long enough for droplets to boot and join, useless soon after (it sits in user data). */
export const AUTH_KEY_EXPIRY_SECONDS = 3600;

export interface TailnetArgs {
  /** The tailnet policy (HuJSON/JSON) this program owns. */
  policy: pulumi.Input<string>;
  /** Tag every node joins with. */
  nodeTag: string;
  description: pulumi.Input<string>;
}

/**
 * The tailnet side of admin access: the policy (who may reach which node on which port) and a
 * pre-authorized, tagged, reusable auth key the nodes join with. The key is created after the
 * policy, because a tag must have an owner in the policy before a key can carry it.
 */
export class Tailnet extends pulumi.ComponentResource {
  readonly authKey: pulumi.Output<string>;
  readonly nodeTag: string;
  private readonly acl: tailscale.Acl;

  constructor(name: string, args: TailnetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:vpn:Tailnet", name, {}, opts);
    this.nodeTag = args.nodeTag;
    // The program owns the whole tailnet policy: it replaces what was there on the first run.
    this.acl = new tailscale.Acl(`${name}-acl`, { acl: args.policy, overwriteExistingContent: true }, { parent: this });
    const key = new tailscale.TailnetKey(
      `${name}-key`,
      {
        reusable: true,
        ephemeral: false,
        preauthorized: true,
        expiry: AUTH_KEY_EXPIRY_SECONDS,
        tags: [args.nodeTag],
        description: args.description,
        // The key expires within the hour; a node created later (a replacement) needs a valid one.
        recreateIfInvalid: "always",
      },
      { parent: this, dependsOn: [this.acl] },
    );
    this.authKey = pulumi.secret(key.key);
    this.registerOutputs({ nodeTag: this.nodeTag });
  }

  /**
   * Waits (up to 10 minutes) until `hostname` has joined, and returns its tailnet IPv4 address.
   * `after` is the droplet: during a preview it does not exist yet, so nothing is looked up.
   */
  address(hostname: string, after: pulumi.Resource): pulumi.Output<string> {
    const device = tailscale.getDeviceOutput({ hostname, waitFor: "10m" }, { parent: this, dependsOn: [after, this.acl] });
    return device.addresses.apply((addresses) => {
      const v4 = addresses.find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a));
      if (!v4) throw new Error(`tailnet device ${hostname} has no IPv4 address (${addresses.join(", ")})`);
      return v4;
    });
  }
}

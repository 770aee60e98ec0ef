import * as pulumi from "@pulumi/pulumi";
import { HeadscaleApi, HeadscaleApiError, HeadscaleDirectory, isExpired } from "./headscaleApi";

/** One hour, as for Tailscale keys (tailnet.ts): enough to boot and join, useless soon after. */
export const PRE_AUTH_KEY_TTL_SECONDS = 3600;

export interface PreAuthKeyArgs {
  /** https://<headscale fqdn> */
  apiUrl: pulumi.Input<string>;
  /** The API key the bootstrap handed over (secret). */
  apiKey: pulumi.Input<string>;
  tags: pulumi.Input<pulumi.Input<string>[]>;
  ttlSeconds?: pulumi.Input<number>;
  /** An admin's own device: the key belongs to the Headscale user with this email, untagged. */
  userEmail?: pulumi.Input<string>;
}

interface Inputs {
  apiUrl: string;
  apiKey: string;
  tags: string[];
  ttlSeconds: number;
  userEmail?: string;
}

interface Outputs extends Inputs {
  key: string;
  expiration: string;
  expired: boolean;
}

/**
 * Pre-auth keys as resources: tagged, single-use, short-lived, one per node. Created and deleted
 * through Headscale's REST API (headscaleApi.ts). A key is replaced when its inputs change; an
 * expired key stays in state (expired: true) until its node is replaced, which needs a new one.
 */
export const preAuthKeyProvider: pulumi.dynamic.ResourceProvider = {
  async check(_olds: Inputs, news: Inputs) {
    const failures: pulumi.dynamic.CheckFailure[] = [];
    if (!Array.isArray(news.tags) || (news.tags.length === 0) === !news.userEmail) failures.push({ property: "tags", reason: "a node key carries tags (tag:name); an admin's key a userEmail and no tags" });
    if (!Number.isInteger(news.ttlSeconds) || news.ttlSeconds < 300 || news.ttlSeconds > 86400) failures.push({ property: "ttlSeconds", reason: "must be 300-86400 seconds" });
    return { inputs: news, failures };
  },

  async create(inputs: Inputs) {
    const api = new HeadscaleApi(inputs.apiUrl, inputs.apiKey);
    const expiration = new Date(Date.now() + inputs.ttlSeconds * 1000).toISOString();
    const user = inputs.userEmail ? (await new HeadscaleDirectory(inputs.apiUrl, inputs.apiKey).userByEmail(inputs.userEmail)).id : undefined;
    const k = await api.createPreAuthKey({ aclTags: inputs.tags, expiration, reusable: false, ephemeral: false, ...(user ? { user } : {}) });
    const outs: Outputs = { ...inputs, key: k.key, expiration: k.expiration ?? expiration, expired: false };
    return { id: k.id, outs };
  },

  async read(id: string, props: Outputs) {
    const api = new HeadscaleApi(props.apiUrl, props.apiKey);
    const k = await api.getPreAuthKey(id);
    // An empty id tells the engine the resource is gone.
    if (!k) return { id: "", props: {} };
    return { id, props: { ...props, expiration: k.expiration ?? props.expiration, expired: isExpired(k) } };
  },

  async diff(_id: string, olds: Outputs, news: Inputs) {
    const replaces: string[] = (["apiUrl", "ttlSeconds", "userEmail"] as const).filter((p) => olds[p] !== news[p]);
    if (JSON.stringify([...olds.tags].sort()) !== JSON.stringify([...news.tags].sort())) replaces.push("tags");
    const changes = replaces.length > 0 || olds.apiKey !== news.apiKey;
    return { changes, replaces, deleteBeforeReplace: false };
  },

  async update(_id: string, olds: Outputs, news: Inputs) {
    // Only the API key (credentials) can change in place.
    return { outs: { ...olds, apiKey: news.apiKey } };
  },

  async delete(id: string, props: Outputs) {
    const api = new HeadscaleApi(props.apiUrl, props.apiKey);
    // Already gone: nothing to delete. (Upstream answers a missing id with a plain error, which
    // grpc-gateway turns into HTTP 500, so absence is checked first rather than inferred.)
    let current;
    try {
      current = await api.getPreAuthKey(id);
    } catch (e) {
      // Deletes run at the end of a run, with the API key this resource stored; if the same run
      // renewed the API key, that one is expired. A pre-auth key past its own expiry joins nothing:
      // leave its record rather than fail the run. An unexpired one must not be left behind.
      if (e instanceof HeadscaleApiError && e.status === 401 && isExpired({ expiration: props.expiration })) return;
      throw e;
    }
    if (!current) return;
    // Expire first: if the delete then fails, the key is at least useless.
    await api.expirePreAuthKey(id);
    await api.deletePreAuthKey(id);
  },
};

export class HeadscalePreAuthKey extends pulumi.dynamic.Resource {
  declare readonly key: pulumi.Output<string>;
  declare readonly expiration: pulumi.Output<string>;
  declare readonly expired: pulumi.Output<boolean>;

  constructor(name: string, args: PreAuthKeyArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      preAuthKeyProvider,
      name,
      { ...args, apiKey: pulumi.secret(args.apiKey), ttlSeconds: args.ttlSeconds ?? PRE_AUTH_KEY_TTL_SECONDS, key: undefined, expiration: undefined, expired: undefined },
      { ...opts, additionalSecretOutputs: ["key", "apiKey"] },
      "headscale",
      "PreAuthKey",
    );
  }
}

import { API_KEY_PATTERN } from "../render/headscaleBootstrap";

/**
 * The slice of Headscale 0.29's REST API this program uses: pre-auth keys, API keys, nodes. Shapes from
 * juanfont/headscale v0.29.2 gen/openapiv2/headscale/v1/headscale.swagger.json (v1PreAuthKey,
 * v1CreatePreAuthKeyRequest, v1ApiKey, v1CreateApiKeyRequest, v1ExpireApiKeyRequest, v1Node; uint64
 * ids travel as JSON strings) and hscontrol/grpcv1.go.
 * Every call carries `Authorization: Bearer <api key>` (hscontrol/app.go httpAuthenticationMiddleware
 * answers 401 "Unauthorized" otherwise). No Pulumi here: the dynamic provider wraps it.
 */

export interface PreAuthKey {
  id: string;
  /** The full key only in the create response; lists show `hskey-auth-<prefix>-***` (types/preauth_key.go Proto). */
  key: string;
  reusable: boolean;
  ephemeral: boolean;
  used: boolean;
  expiration?: string;
  createdAt?: string;
  aclTags: string[];
}

export interface CreatePreAuthKey {
  /** Tag-only keys (no user) since 0.28: the node is owned by its tags. */
  aclTags: string[];
  /** A user-owned key (an admin's own device): the user's id (uint64 as a string). */
  user?: string;
  /** RFC 3339 instant. */
  expiration: string;
  reusable: boolean;
  ephemeral: boolean;
}

export class HeadscaleApiError extends Error {
  constructor(
    readonly status: number,
    readonly operation: string,
    detail: string,
  ) {
    super(`Headscale API refused ${operation}: HTTP ${status}${detail ? ` (${detail})` : ""}${status === 401 ? "; the API key is wrong, expired or revoked" : ""}`);
    this.name = "HeadscaleApiError";
  }
}

const TAG = /^tag:[a-z0-9][a-z0-9-]*$/;

export class HeadscaleApi {
  private readonly base: string;

  constructor(
    baseUrl: string,
    private readonly apiKey: string,
    private readonly timeoutMs = 15_000,
    private readonly connectAttempts = 12,
    private readonly retryDelayMs = 10_000,
  ) {
    const url = new URL(baseUrl);
    // The API key must never cross the network in clear; plain http only to this machine (tests).
    if (url.protocol !== "https:" && !(url.protocol === "http:" && ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname))) {
      throw new Error(`Headscale API URL ${baseUrl} must be https:// (plain http only for loopback)`);
    }
    this.base = url.origin;
  }

  protected async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const operation = `${method} ${path.split("?")[0]}`;
    let res: Response | undefined;
    // Connection and TLS failures are retried: right after first boot the name may not resolve yet
    // and Headscale fetches its certificate on the first TLS handshake. HTTP answers are not retried.
    for (let attempt = 1; res === undefined; attempt++) {
      try {
        res = await fetch(`${this.base}${path}`, {
          method,
          headers: { Authorization: `Bearer ${this.apiKey}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(this.timeoutMs),
        });
      } catch (e) {
        if (attempt >= this.connectAttempts) throw new Error(`Headscale API ${operation} at ${this.base} failed after ${attempt} attempts: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, this.retryDelayMs));
      }
    }
    const text = await res.text();
    if (!res.ok) {
      // grpc-gateway errors are rpcStatus {code, message}; the auth middleware answers plain text.
      let detail = text.trim().slice(0, 200);
      try {
        const status = JSON.parse(text) as { message?: string };
        if (typeof status.message === "string") detail = status.message;
      } catch {
        // plain text
      }
      throw new HeadscaleApiError(res.status, operation, detail);
    }
    return (text === "" ? {} : JSON.parse(text)) as T;
  }

  async createPreAuthKey(req: CreatePreAuthKey): Promise<PreAuthKey> {
    if (!req.aclTags.every((t) => TAG.test(t))) throw new Error(`pre-auth key tags ${JSON.stringify(req.aclTags)} must be tag:name entries`);
    if (req.aclTags.length === 0 && req.user === undefined) throw new Error("a pre-auth key needs tags or a user");
    const res = await this.call<{ preAuthKey?: PreAuthKey }>("POST", "/api/v1/preauthkey", req);
    if (!res.preAuthKey?.id || !res.preAuthKey.key) throw new Error("Headscale API POST /api/v1/preauthkey answered without a key");
    return normalize(res.preAuthKey);
  }

  async listPreAuthKeys(): Promise<PreAuthKey[]> {
    const res = await this.call<{ preAuthKeys?: PreAuthKey[] }>("GET", "/api/v1/preauthkey");
    return (res.preAuthKeys ?? []).map(normalize);
  }

  async getPreAuthKey(id: string): Promise<PreAuthKey | undefined> {
    return (await this.listPreAuthKeys()).find((k) => k.id === id);
  }

  async expirePreAuthKey(id: string): Promise<void> {
    await this.call("POST", "/api/v1/preauthkey/expire", { id });
  }

  async deletePreAuthKey(id: string): Promise<void> {
    await this.call("DELETE", `/api/v1/preauthkey?id=${encodeURIComponent(id)}`);
  }

  /**
   * A new API key valid until `expiration` (RFC 3339). Always give one: grpcv1.go CreateApiKey turns
   * a missing expiration into the zero time, a key that is expired at once (db/api_key.go ValidateAPIKey).
   */
  async createApiKey(expiration: string): Promise<string> {
    const res = await this.call<{ apiKey?: string }>("POST", "/api/v1/apikey", { expiration });
    if (!res.apiKey || !API_KEY_PATTERN.test(res.apiKey)) throw new Error("Headscale API POST /api/v1/apikey answered without an API key");
    return res.apiKey;
  }

  async listApiKeys(): Promise<ApiKeyInfo[]> {
    const res = await this.call<{ apiKeys?: ApiKeyInfo[] }>("GET", "/api/v1/apikey");
    return res.apiKeys ?? [];
  }

  /** Sets the key's expiration to now (db/api_key.go ExpireAPIKey): it stops working at once. */
  async expireApiKey(id: string): Promise<void> {
    await this.call("POST", "/api/v1/apikey/expire", { id });
  }
}

/** v1ApiKey: the list shows `hskey-api-<prefix>-***`, never the secret (types/api_key.go Proto). */
export interface ApiKeyInfo {
  id: string;
  prefix: string;
  expiration?: string;
  createdAt?: string;
  lastSeen?: string;
}

/** How the API key list names `apiKey` (types/api_key.go Proto: "hskey-api-" + 12-character prefix + "-***"). */
export function apiKeyListPrefix(apiKey: string): string {
  return `${apiKey.slice(0, "hskey-api-".length + 12)}-***`;
}

/** v1Node, the members this program reads. */
export interface HeadscaleNode {
  id: string;
  /** The machine's own hostname (types/node.go Proto: Name = node.Hostname). */
  name: string;
  /** Unique in the tailnet: a second `hm-prod-2` is given `hm-prod-2-1` (state/node_store.go resolveGivenName). */
  givenName?: string;
  ipAddresses: string[];
  createdAt?: string;
  tags: string[];
}

export interface HeadscaleUser {
  id: string;
  name: string;
  email?: string;
}

export class HeadscaleDirectory extends HeadscaleApi {
  // Explicit on purpose: Pulumi's closure serializer gives a subclass without a constructor
  // `constructor() { super(); }`, dropping the arguments (pulumi/pulumi
  // sdk/nodejs/runtime/closure/parseFunction.ts), so in the dynamic-provider host the URL was undefined.
  constructor(baseUrl: string, apiKey: string, timeoutMs?: number, connectAttempts?: number, retryDelayMs?: number) {
    super(baseUrl, apiKey, timeoutMs, connectAttempts, retryDelayMs);
  }

  async listNodes(): Promise<HeadscaleNode[]> {
    const res = await this.call<{ nodes?: HeadscaleNode[] }>("GET", "/api/v1/node");
    return (res.nodes ?? []).map((n) => ({ ...n, ipAddresses: n.ipAddresses ?? [], tags: n.tags ?? [] }));
  }

  async userByEmail(email: string): Promise<HeadscaleUser> {
    const res = await this.call<{ users?: HeadscaleUser[] }>("GET", `/api/v1/user?email=${encodeURIComponent(email)}`);
    const users = (res.users ?? []).filter((u) => u.email === email);
    if (users.length !== 1) throw new Error(`Headscale has ${users.length} users with email ${email}; the control node's bootstrap creates one per admin`);
    return users[0]!;
  }
}

function normalize(k: PreAuthKey): PreAuthKey {
  // protojson omits false booleans and empty lists unless EmitUnpopulated is set.
  return { ...k, reusable: k.reusable ?? false, ephemeral: k.ephemeral ?? false, used: k.used ?? false, aclTags: k.aclTags ?? [] };
}

/** Whether the key can no longer join a node at `now`. */
export function isExpired(k: Pick<PreAuthKey, "expiration">, now = new Date()): boolean {
  return k.expiration !== undefined && Date.parse(k.expiration) <= now.getTime();
}

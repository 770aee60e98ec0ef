import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";

/**
 * A fake of Headscale 0.29.2's pre-auth key API on 127.0.0.1, built from its OpenAPI document
 * (juanfont/headscale v0.29.2 gen/openapiv2/headscale/v1/headscale.swagger.json):
 *   POST /api/v1/preauthkey            body v1CreatePreAuthKeyRequest -> v1CreatePreAuthKeyResponse
 *   GET  /api/v1/preauthkey                                           -> v1ListPreAuthKeysResponse
 *   POST /api/v1/preauthkey/expire     body v1ExpirePreAuthKeyRequest -> {}
 *   DELETE /api/v1/preauthkey?id=N                                    -> v1DeletePreAuthKeyResponse {}
 *   GET  /api/v1/user?email=E                                         -> v1ListUsersResponse
 *   GET  /api/v1/node                                                 -> v1ListNodesResponse
 *   POST /api/v1/apikey                body v1CreateApiKeyRequest    -> v1CreateApiKeyResponse
 *   GET  /api/v1/apikey                                               -> v1ListApiKeysResponse
 *   POST /api/v1/apikey/expire         body v1ExpireApiKeyRequest    -> {}
 * API keys as hscontrol/db/api_key.go keeps them: `hskey-api-<12>-<64>` of base64url characters
 * (CreateAPIKey), refused once `expiration` is before now (ValidateAPIKey, on the fake's clock
 * `now`), a create without expiration gets the zero time (grpcv1.go CreateApiKey), expire sets
 * expiration to now (ExpireAPIKey), lists show `hskey-api-<prefix>-***` (types/api_key.go Proto).
 * Nodes join through `join`, which names them as hscontrol/state/node_store.go does: `name` is the
 * hostname, `givenName` the hostname made unique among the other nodes (resolveGivenName: base,
 * base-1, base-2, ...). uint64 fields are JSON strings (protojson). Behaviour from hscontrol: 401 "Unauthorized" in plain
 * text without the right Bearer key (app.go); a missing id is a plain error, which grpc-gateway
 * maps to codes.Unknown, HTTP 500 (grpcv1.go returns it unwrapped); InvalidArgument (HTTP 400, rpcStatus) for a tag that
 * is not tag:name (grpcv1.go validateTag); lists show `hskey-auth-<prefix>-***` (types/preauth_key.go).
 * Request members outside the document's definitions are refused (stricter than upstream).
 */
export interface FakeKey {
  id: string;
  prefix: string;
  secret: string;
  reusable: boolean;
  ephemeral: boolean;
  used: boolean;
  expiration?: string;
  createdAt: string;
  aclTags: string[];
}

const CREATE_MEMBERS = new Set(["user", "reusable", "ephemeral", "expiration", "aclTags"]);
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** n characters of base64url, as util.GenerateRandomStringURLSafe makes them. */
function b64url(n: number): string {
  return [...randomBytes(n)].map((b) => B64URL[b % 64]).join("");
}

export interface FakeApiKey {
  id: string;
  prefix: string;
  secret: string;
  expiration?: string;
  createdAt: string;
}

export interface FakeNode {
  id: string;
  name: string;
  givenName: string;
  ipAddresses: string[];
  createdAt: string;
  tags: string[];
}

export interface FakeHeadscaleSnapshot {
  keys: FakeKey[];
  users: { id: string; name: string; email: string }[];
  nodes: FakeNode[];
  apiKeys: FakeApiKey[];
  next: { key: number; apiKey: number; node: number };
}

export class FakeHeadscaleApi {
  readonly keys = new Map<string, FakeKey>();
  readonly requests: { method: string; url: string; body: unknown }[] = [];
  /** v1User entries (GET /api/v1/user?email=). */
  readonly users: { id: string; name: string; email: string }[] = [];
  /** v1Node entries (GET /api/v1/node); add them with `join`. */
  readonly nodes: FakeNode[] = [];
  /** API keys by their 12-character prefix. */
  readonly apiKeys = new Map<string, FakeApiKey>();
  /** The server's clock: tests move it to simulate time passing. */
  now: () => Date = () => new Date();
  private nextApiKeyId = 1;
  private nextNodeId = 1;
  /** Set to make the next authorized call to `path` fail with this status (then it is cleared). */
  failNext?: { path: string; status: number; code: number; message: string };
  /** Set to make every call fail with this HTTP status and rpcStatus message. */
  failWith?: { status: number; code: number; message: string };
  private nextId = 1;
  private server?: Server;
  url = "";

  /** `apiKey` is the key the bootstrap handed over, valid until `apiKeyExpiration` (default: never). */
  constructor(
    readonly apiKey: string,
    apiKeyExpiration?: string,
  ) {
    this.addApiKey(apiKey, apiKeyExpiration);
  }

  /** Everything the fake holds, as JSON (the engine harness keeps a simulated Headscale's database in its cloud file). */
  snapshot(): FakeHeadscaleSnapshot {
    return { keys: [...this.keys.values()], users: [...this.users], nodes: [...this.nodes], apiKeys: [...this.apiKeys.values()], next: { key: this.nextId, apiKey: this.nextApiKeyId, node: this.nextNodeId } };
  }

  /** Makes this fake hold exactly what `snapshot()` returned. */
  restore(s: FakeHeadscaleSnapshot): void {
    this.keys.clear();
    for (const k of s.keys) this.keys.set(k.id, k);
    this.apiKeys.clear();
    for (const k of s.apiKeys) this.apiKeys.set(k.prefix, k);
    this.users.splice(0, this.users.length, ...s.users);
    this.nodes.splice(0, this.nodes.length, ...s.nodes);
    this.nextId = s.next.key;
    this.nextApiKeyId = s.next.apiKey;
    this.nextNodeId = s.next.node;
  }

  /** An API key made as `headscale apikeys create` makes it, on the unix socket (no Bearer key needed). */
  addApiKey(key: string, expiration: string | undefined): FakeApiKey {
    const m = /^hskey-api-(.{12})-(.{64})$/.exec(key);
    if (!m) throw new Error(`not an API key: ${key}`);
    const k: FakeApiKey = { id: String(this.nextApiKeyId++), prefix: m[1]!, secret: m[2]!, expiration, createdAt: this.now().toISOString() };
    this.apiKeys.set(k.prefix, k);
    return k;
  }

  /** Whether `key` passes ValidateAPIKey now. */
  validApiKey(key: string): boolean {
    const m = /^hskey-api-(.{12})-(.{64})$/.exec(key);
    const k = m ? this.apiKeys.get(m[1]!) : undefined;
    return k !== undefined && k.secret === m![2] && !(k.expiration !== undefined && Date.parse(k.expiration) < this.now().getTime());
  }

  /** A machine registers: a new node whose given name is its hostname made unique (resolveGivenName). */
  join(hostname: string, tags: string[], ipv4: string, createdAt = this.now().toISOString()): FakeNode {
    const taken = new Set(this.nodes.map((n) => n.givenName));
    let givenName = hostname;
    for (let i = 1; taken.has(givenName); i++) givenName = `${hostname}-${i}`;
    const node: FakeNode = { id: String(this.nextNodeId++), name: hostname, givenName, ipAddresses: [ipv4, `fd7a:115c:a1e0::${this.nextNodeId}`], createdAt, tags };
    this.nodes.push(node);
    return node;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req).then(({ status, body }) => {
        res.writeHead(status, { "Content-Type": typeof body === "string" ? "text/plain" : "application/json" });
        res.end(typeof body === "string" ? body : JSON.stringify(body));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private proto(k: FakeKey) {
    return { id: k.id, key: `hskey-auth-${k.prefix}-***`, reusable: k.reusable, ephemeral: k.ephemeral, used: k.used, expiration: k.expiration, createdAt: k.createdAt, aclTags: k.aclTags };
  }

  private async handle(req: IncomingMessage): Promise<{ status: number; body: unknown }> {
    let raw = "";
    for await (const chunk of req) raw += String(chunk);
    const body = raw === "" ? undefined : (JSON.parse(raw) as Record<string, unknown>);
    this.requests.push({ method: req.method ?? "", url: req.url ?? "", body });
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
    if (bearer === undefined || !this.validApiKey(bearer)) return { status: 401, body: "Unauthorized" };
    if (this.failWith) return { status: this.failWith.status, body: { code: this.failWith.code, message: this.failWith.message, details: [] } };
    const url = new URL(req.url ?? "/", "http://x");
    if (this.failNext?.path === url.pathname) {
      const { status, code, message } = this.failNext;
      this.failNext = undefined;
      return { status, body: { code, message, details: [] } };
    }
    const invalid = (message: string) => ({ status: 400, body: { code: 3, message, details: [] } });
    if (url.pathname === "/api/v1/preauthkey" && req.method === "POST") {
      for (const k of Object.keys(body ?? {})) if (!CREATE_MEMBERS.has(k)) return invalid(`unknown field "${k}"`);
      const tags = (body?.aclTags ?? []) as string[];
      for (const t of tags) if (!/^tag:[a-z0-9][a-z0-9-]*$/.test(t)) return invalid(`tag must start with the string 'tag:', got: ${t}`);
      const expiration = body?.expiration as string | undefined;
      if (expiration !== undefined && Number.isNaN(Date.parse(expiration))) return invalid("invalid google.protobuf.Timestamp value");
      if (body?.user !== undefined && !this.users.some((u) => u.id === body.user)) return { status: 500, body: { code: 2, message: "record not found", details: [] } };
      const k: FakeKey = {
        id: String(this.nextId++),
        prefix: randomBytes(6).toString("hex"),
        secret: randomBytes(32).toString("hex"),
        reusable: body?.reusable === true,
        ephemeral: body?.ephemeral === true,
        used: false,
        expiration,
        createdAt: new Date().toISOString(),
        aclTags: tags,
      };
      this.keys.set(k.id, k);
      return { status: 200, body: { preAuthKey: { ...this.proto(k), key: `hskey-auth-${k.prefix}-${k.secret}` } } };
    }
    if (url.pathname === "/api/v1/user" && req.method === "GET") {
      const email = url.searchParams.get("email");
      return { status: 200, body: { users: this.users.filter((u) => email === null || u.email === email) } };
    }
    if (url.pathname === "/api/v1/node" && req.method === "GET") {
      return { status: 200, body: { nodes: this.nodes } };
    }
    if (url.pathname === "/api/v1/apikey" && req.method === "POST") {
      for (const k of Object.keys(body ?? {})) if (k !== "expiration") return invalid(`unknown field "${k}"`);
      const expiration = (body?.expiration as string | undefined) ?? "0001-01-01T00:00:00Z";
      if (Number.isNaN(Date.parse(expiration))) return invalid("invalid google.protobuf.Timestamp value");
      const key = `hskey-api-${b64url(12)}-${b64url(64)}`;
      this.addApiKey(key, expiration);
      return { status: 200, body: { apiKey: key } };
    }
    if (url.pathname === "/api/v1/apikey" && req.method === "GET") {
      const apiKeys = [...this.apiKeys.values()].map((k) => ({ id: k.id, prefix: `hskey-api-${k.prefix}-***`, expiration: k.expiration, createdAt: k.createdAt }));
      return { status: 200, body: { apiKeys: apiKeys.sort((a, b) => Number(a.id) - Number(b.id)) } };
    }
    if (url.pathname === "/api/v1/apikey/expire" && req.method === "POST") {
      const k = [...this.apiKeys.values()].find((x) => (body?.id !== undefined && x.id === String(body.id)) || (body?.prefix !== undefined && x.prefix === body.prefix));
      if (!k) return { status: 500, body: { code: 2, message: "record not found", details: [] } };
      k.expiration = this.now().toISOString();
      return { status: 200, body: {} };
    }
    if (url.pathname === "/api/v1/preauthkey" && req.method === "GET") {
      return { status: 200, body: { preAuthKeys: [...this.keys.values()].map((k) => this.proto(k)) } };
    }
    if (url.pathname === "/api/v1/preauthkey/expire" && req.method === "POST") {
      const k = this.keys.get(String(body?.id));
      if (!k) return { status: 500, body: { code: 2, message: "record not found", details: [] } };
      k.expiration = new Date().toISOString();
      return { status: 200, body: {} };
    }
    if (url.pathname === "/api/v1/preauthkey" && req.method === "DELETE") {
      const id = url.searchParams.get("id") ?? "";
      if (!this.keys.delete(id)) return { status: 500, body: { code: 2, message: "record not found", details: [] } };
      return { status: 200, body: {} };
    }
    return { status: 404, body: { code: 5, message: "Not Found", details: [] } };
  }
}

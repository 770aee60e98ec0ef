import { isIPv4, isIPv6 } from "node:net";
import { stringify } from "yaml";

/**
 * dendrite.yaml for Dendrite v0.15.2 (monolith). Dendrite reads it with yaml.v2 non-strictly, so an
 * unknown key is silently ignored: test/dendriteConfigSchema.ts is the strict model the output is
 * checked against.
 */

/** Postgres connection parts; the renderer builds the URL so every part is percent-encoded once, here. */
export interface DendriteDatabaseInput {
  user: string;
  password: string;
  /** Swarm service name or address of Postgres. */
  host: string;
  port: number;
  name: string;
  /** lib/pq sslmode. "disable" is for the internal overlay only (WireGuard already encrypts between nodes). */
  sslMode?: "disable" | "require" | "verify-ca" | "verify-full";
  maxOpenConnections: number;
  /** Default min(5, maxOpenConnections). */
  maxIdleConnections?: number;
}

export interface DendriteTurnInput {
  /** e.g. "turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp". */
  uris: string[];
  /** Same value as coTURN's static-auth-secret. */
  sharedSecret: string;
  /** Go duration ("1h"). Empty would make /voip/turnServer answer {} (no TURN at all). */
  userLifetime: string;
}

export interface DendriteKeyServer {
  serverName: string;
  keys: { keyId: string; publicKey: string }[];
}

export interface DendriteConfigInput {
  /** Matrix server name: user IDs are @x:serverName. */
  serverName: string;
  /** Signing key PEM inside the container (a Swarm secret), e.g. /run/secrets/matrix_key.pem. */
  privateKeyPath: string;
  /** Go duration remote servers may cache our key for. Default "168h" (upstream default). */
  keyValidityPeriod?: string;
  /** The one global pool; the rendered connection string holds the password, so the file is a Swarm secret. */
  database: DendriteDatabaseInput;
  /** "matrix.example.org:443": served at /.well-known/matrix/server when delegating. */
  wellKnownServerName?: string;
  /** "https://matrix.example.org": served at /.well-known/matrix/client. */
  wellKnownClientName?: string;
  federationDisabled: boolean;
  presence: { inbound: boolean; outbound: boolean };
  /** Needed by `create-account` (POST /_synapse/admin/v1/register): never route /_synapse/ publicly. */
  registrationSharedSecret: string;
  rateLimiting: { threshold: number; cooloffMs: number; exemptUserIds?: string[] };
  maxUploadBytes: number;
  /** Absolute paths on persistent volumes. */
  mediaPath: string;
  jetstreamPath: string;
  /** Full-text search index; search is off when absent. */
  searchIndexPath?: string;
  /** null: TURN deliberately off (no `turn` block). Never a half-filled block that silently answers {}. */
  turn: DendriteTurnInput | null;
  /**
   * Header carrying the client address (sync_api.real_ip_header; Dendrite reads its first address).
   * X-Forwarded-For: Traefik drops it from an untrusted peer and appends the peer, so its first address
   * is the TCP peer, or, on the funnel entrypoint, the client address tailscaled set.
   */
  realIpHeader: string;
  /** federation_api.key_perspectives. Undefined: matrix.org (upstream sample); [] for none. */
  trustedKeyServers?: DendriteKeyServer[];
  /** Stack CIDRs (mesh, VPC, Swarm pool) denied on top of DENDRITE_BASELINE_DENY_NETWORKS. */
  denyNetworks: string[];
  /** Default ["0.0.0.0/0"], as upstream: no IPv6 federation egress (Swarm overlays have none). */
  allowNetworks?: string[];
  /** global.cache.max_size_estimated in bytes (upstream default 1 GiB): keep it under the service memory limit. */
  cacheMaxBytes?: number;
  metricsEnabled: false;
  logLevel?: DendriteLogLevel;
}

export const DENDRITE_LOG_LEVELS = ["panic", "fatal", "error", "warn", "info", "debug", "trace"] as const;
export type DendriteLogLevel = (typeof DENDRITE_LOG_LEVELS)[number];

/** matrix.org's notary keys as in dendrite-sample.yaml v0.15.2. */
export const MATRIX_ORG_KEY_SERVER: DendriteKeyServer = Object.freeze({
  serverName: "matrix.org",
  keys: Object.freeze([
    Object.freeze({ keyId: "ed25519:auto", publicKey: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw" }),
    Object.freeze({ keyId: "ed25519:a_RXGa", publicKey: "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ" }),
  ]) as DendriteKeyServer["keys"],
});

/**
 * Outbound federation must never reach these (SSRF into our own networks or the metadata service).
 * Every entry carries a prefix: Dendrite's check (gomatrixserverlib fclient inRange) gives up on the
 * first entry net.ParseCIDR rejects, which would silently disable the entries after it.
 */
export const DENDRITE_BASELINE_DENY_NETWORKS: readonly string[] = Object.freeze([
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/128",
  "::1/128",
  "64:ff9b::/96",
  "100::/64",
  "2001::/23",
  "2002::/16",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
]);

export const DENDRITE_DEFAULT_ALLOW_NETWORKS: readonly string[] = Object.freeze(["0.0.0.0/0"]);

// Pre-generated at upload (dynamic thumbnails are off): the sizes of dendrite-sample.yaml.
const THUMBNAIL_SIZES = [
  { width: 32, height: 32, method: "crop" },
  { width: 96, height: 96, method: "crop" },
  { width: 640, height: 480, method: "scale" },
];

// ---- validation ------------------------------------------------------------------------

function fail(key: string, message: string): never {
  throw new Error(`renderDendriteYaml: ${key} ${message}`);
}

// Raw line breaks (yaml.v2 also folds U+0085/U+2028/U+2029) or control characters would change a value on the way through YAML.
const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

function text(key: string, value: string, minLength = 1): string {
  if (typeof value !== "string" || value.length === 0) fail(key, "must be a non-empty string");
  if (UNSAFE_CHARS.test(value)) fail(key, "must not contain control characters or line breaks");
  if (value.trim() !== value) fail(key, "must not have leading or trailing whitespace");
  if (value.length < minLength) fail(key, `must be at least ${minLength} characters long (it is a secret)`);
  return value;
}

function int(key: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) fail(key, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  return value;
}

function absolutePath(key: string, value: string): string {
  text(key, value);
  if (!value.startsWith("/")) fail(key, `must be an absolute path, got "${value}"`);
  if (value.split("/").includes("..")) fail(key, `must not contain "..", got "${value}"`);
  return value;
}

const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

function isHostname(host: string): boolean {
  if (host.length > 255) return false;
  if (isIPv4(host)) return true;
  if (host.startsWith("[") && host.endsWith("]")) return isIPv6(host.slice(1, -1)) && !host.includes("%");
  return host.split(".").every((label) => DNS_LABEL.test(label));
}

/** Matrix spec server name grammar: hostname [":" port]. */
export function isMatrixServerName(value: string): boolean {
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(value);
  if (!m || m[1] === undefined || m[1] === "") return false;
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return false;
  return isHostname(m[1]);
}

/** Accepts exactly what Go's net.ParseCIDR accepts in practice: address "/" prefix length, no zone. */
export function isGoCidr(value: string): boolean {
  const slash = value.indexOf("/");
  if (slash < 0 || value.includes("%")) return false;
  const addr = value.slice(0, slash);
  const len = value.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(len)) return false;
  if (isIPv4(addr)) return Number(len) <= 32;
  if (isIPv6(addr)) return Number(len) <= 128;
  return false;
}

const GO_DURATION = /^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/;
const GO_DURATION_UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 6e10, h: 3.6e12 };

/** Nanoseconds of a Go time.ParseDuration string without sign, or undefined when Go would refuse it. */
export function goDurationNanos(value: string): number | undefined {
  if (value === "0") return 0;
  if (!GO_DURATION.test(value)) return undefined;
  let total = 0;
  for (const m of value.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(m[1]) * (GO_DURATION_UNIT_NS[m[2] as string] as number);
  }
  return total;
}

function positiveDuration(key: string, value: string): string {
  text(key, value);
  const ns = goDurationNanos(value);
  if (ns === undefined || ns <= 0) fail(key, `must be a positive Go duration such as "1h" or "30m", got "${value}"`);
  return value;
}

function cidrs(key: string, values: readonly string[]): string[] {
  if (!Array.isArray(values)) fail(key, "must be an array of CIDRs");
  values.forEach((v, i) => {
    if (typeof v !== "string" || !isGoCidr(v)) fail(`${key}[${i}]`, `must be a CIDR with a prefix length (e.g. 10.0.0.0/8, ::1/128), got "${String(v)}"`);
  });
  return [...values];
}

function dedupe(values: string[]): string[] {
  return [...new Set(values)];
}

const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const TURN_URI = /^turns?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?(?:\?transport=(?:udp|tcp))?$/;
const KEY_ID = /^ed25519:[A-Za-z0-9_]+$/;
const USER_ID = /^@[^\s:]+:.+$/;

function keyServers(servers: DendriteKeyServer[]): { server_name: string; keys: { key_id: string; public_key: string }[] }[] {
  if (!Array.isArray(servers)) fail("trustedKeyServers", "must be an array");
  return servers.map((s, i) => {
    const where = `trustedKeyServers[${i}]`;
    if (!isMatrixServerName(text(`${where}.serverName`, s.serverName))) fail(`${where}.serverName`, `is not a Matrix server name: "${s.serverName}"`);
    if (!Array.isArray(s.keys) || s.keys.length === 0) fail(`${where}.keys`, "must list at least one key");
    return {
      server_name: s.serverName,
      keys: s.keys.map((k, j) => {
        if (!KEY_ID.test(k.keyId)) fail(`${where}.keys[${j}].keyId`, `must match ed25519:[A-Za-z0-9_]+, got "${k.keyId}"`);
        // Dendrite decodes it as unpadded standard base64; an undecodable key is skipped with a log line only.
        if (!/^[A-Za-z0-9+/]{43}$/.test(k.publicKey) || Buffer.from(k.publicKey, "base64").length !== 32) {
          fail(`${where}.keys[${j}].publicKey`, "must be an unpadded base64 ed25519 public key (43 characters)");
        }
        return { key_id: k.keyId, public_key: k.publicKey };
      }),
    };
  });
}

/** postgres:// URL with each part percent-encoded (lib/pq decodes them with net/url). */
export function postgresConnectionString(db: DendriteDatabaseInput): string {
  text("database.user", db.user);
  text("database.password", db.password);
  text("database.name", db.name);
  text("database.host", db.host);
  if (!isHostname(db.host) && !isIPv6(db.host)) fail("database.host", `is not a host name or address: "${db.host}"`);
  int("database.port", db.port, 1, 65535);
  const sslMode = db.sslMode ?? "disable";
  if (!["disable", "require", "verify-ca", "verify-full"].includes(sslMode)) fail("database.sslMode", `is not a lib/pq sslmode: "${sslMode}"`);
  const host = isIPv6(db.host) ? `[${db.host}]` : db.host;
  // Also the sub-delims encodeURIComponent leaves alone, so no URL parser can read them as structure.
  const e = (part: string) => encodeURIComponent(part).replace(/[!'()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`);
  return `postgres://${e(db.user)}:${e(db.password)}@${host}:${db.port}/${e(db.name)}?sslmode=${sslMode}`;
}

// ---- rendering -------------------------------------------------------------------------

export function renderDendriteYaml(c: DendriteConfigInput): string {
  if (!isMatrixServerName(text("serverName", c.serverName))) fail("serverName", `is not a Matrix server name (hostname[:port]): "${c.serverName}"`);
  absolutePath("privateKeyPath", c.privateKeyPath);
  const keyValidityPeriod = positiveDuration("keyValidityPeriod", c.keyValidityPeriod ?? "168h");

  const db = c.database;
  if (db === null || typeof db !== "object") fail("database", "must be an object");
  const connectionString = postgresConnectionString(db);
  const maxOpen = int("database.maxOpenConnections", db.maxOpenConnections, 1, 10000);
  const maxIdle = int("database.maxIdleConnections", db.maxIdleConnections ?? Math.min(5, maxOpen), 0, maxOpen);

  if (c.wellKnownServerName !== undefined && !isMatrixServerName(text("wellKnownServerName", c.wellKnownServerName))) {
    fail("wellKnownServerName", `is not a server name with optional port: "${c.wellKnownServerName}"`);
  }
  if (c.wellKnownClientName !== undefined) {
    text("wellKnownClientName", c.wellKnownClientName);
    let u: URL | undefined;
    try {
      u = new URL(c.wellKnownClientName);
    } catch {
      u = undefined;
    }
    // Dendrite itself refuses a value without http:// or https:// (Global.Verify).
    if (!u || !["http:", "https:"].includes(u.protocol) || u.username || u.password || u.search || u.hash) {
      fail("wellKnownClientName", `must be a base URL like https://matrix.example.org, got "${c.wellKnownClientName}"`);
    }
  }
  if (typeof c.federationDisabled !== "boolean") fail("federationDisabled", "must be a boolean");
  if (typeof c.presence?.inbound !== "boolean" || typeof c.presence?.outbound !== "boolean") fail("presence", "must be {inbound: boolean, outbound: boolean}");
  text("registrationSharedSecret", c.registrationSharedSecret, 16);

  const rl = c.rateLimiting;
  if (rl === null || typeof rl !== "object") fail("rateLimiting", "must be {threshold, cooloffMs, exemptUserIds?}");
  const threshold = int("rateLimiting.threshold", rl.threshold, 1);
  const cooloff = int("rateLimiting.cooloffMs", rl.cooloffMs, 1);
  const exempt = rl.exemptUserIds ?? [];
  exempt.forEach((id, i) => {
    if (!USER_ID.test(text(`rateLimiting.exemptUserIds[${i}]`, id))) fail(`rateLimiting.exemptUserIds[${i}]`, `is not a user ID (@name:server): "${id}"`);
  });

  // 0 would mean unlimited uploads.
  const maxUpload = int("maxUploadBytes", c.maxUploadBytes, 1);

  const paths: [string, string][] = [
    ["mediaPath", absolutePath("mediaPath", c.mediaPath)],
    ["jetstreamPath", absolutePath("jetstreamPath", c.jetstreamPath)],
  ];
  if (c.searchIndexPath !== undefined) paths.push(["searchIndexPath", absolutePath("searchIndexPath", c.searchIndexPath)]);
  const norm = (p: string) => (p.endsWith("/") ? p : `${p}/`);
  for (const [ka, a] of paths) {
    for (const [kb, b] of paths) {
      if (ka !== kb && norm(a).startsWith(norm(b))) fail(ka, `("${a}") must not be inside or equal to ${kb} ("${b}")`);
    }
  }

  let turn: { turn_user_lifetime: string; turn_uris: string[]; turn_shared_secret: string } | undefined;
  if (c.turn !== null) {
    if (c.turn === undefined || typeof c.turn !== "object") fail("turn", "must be {uris, sharedSecret, userLifetime} or null to switch TURN off explicitly");
    if (!Array.isArray(c.turn.uris) || c.turn.uris.length === 0) fail("turn.uris", "must list at least one turn:/turns: URI (an empty list makes Dendrite hand out no TURN server)");
    c.turn.uris.forEach((u, i) => {
      if (!TURN_URI.test(text(`turn.uris[${i}]`, u))) fail(`turn.uris[${i}]`, `is not a TURN URI like turn:host:3478?transport=udp: "${u}"`);
    });
    turn = {
      turn_user_lifetime: positiveDuration("turn.userLifetime", c.turn.userLifetime),
      turn_uris: [...c.turn.uris],
      turn_shared_secret: text("turn.sharedSecret", c.turn.sharedSecret, 16),
    };
  }

  if (!HTTP_TOKEN.test(text("realIpHeader", c.realIpHeader))) fail("realIpHeader", `is not an HTTP header name: "${c.realIpHeader}"`);
  const perspectives = keyServers(c.trustedKeyServers ?? [MATRIX_ORG_KEY_SERVER]);
  const deny = dedupe([...DENDRITE_BASELINE_DENY_NETWORKS, ...cidrs("denyNetworks", c.denyNetworks)]);
  const allow = cidrs("allowNetworks", c.allowNetworks ?? DENDRITE_DEFAULT_ALLOW_NETWORKS);
  if (allow.length === 0) fail("allowNetworks", "must not be empty (Dendrite would then apply no CIDR filter at all)");
  if (c.metricsEnabled !== false) fail("metricsEnabled", "must be false: metrics would be served on the public listener");
  const logLevel = c.logLevel ?? "info";
  if (!DENDRITE_LOG_LEVELS.includes(logLevel)) fail("logLevel", `must be one of ${DENDRITE_LOG_LEVELS.join(", ")}, got "${String(logLevel)}"`);
  if (c.cacheMaxBytes !== undefined) int("cacheMaxBytes", c.cacheMaxBytes, 1);

  const config = {
    version: 2,
    global: {
      server_name: c.serverName,
      private_key: c.privateKeyPath,
      key_validity_period: keyValidityPeriod,
      // The monolith's one pool; no component carries its own `database` block.
      database: {
        connection_string: connectionString,
        max_open_conns: maxOpen,
        max_idle_conns: maxIdle,
        conn_max_lifetime: -1,
      },
      ...(c.wellKnownServerName !== undefined ? { well_known_server_name: c.wellKnownServerName } : {}),
      ...(c.wellKnownClientName !== undefined ? { well_known_client_name: c.wellKnownClientName } : {}),
      disable_federation: c.federationDisabled,
      presence: { enable_inbound: c.presence.inbound, enable_outbound: c.presence.outbound },
      // No identity server is trusted, so 3PID requests (made by a client with no CIDR filter) are refused.
      trusted_third_party_id_servers: [],
      report_stats: { enabled: false },
      jetstream: { storage_path: c.jetstreamPath, in_memory: false, addresses: [] },
      metrics: { enabled: false },
      // On purpose: only through the DNS cache's dialer does the plain HTTP client (legacy media
      // fetches) apply deny_networks/allow_networks; the federation client applies them either way.
      dns_cache: { enabled: true, cache_size: 256, cache_lifetime: "5m" },
      ...(c.cacheMaxBytes !== undefined ? { cache: { max_size_estimated: c.cacheMaxBytes, max_age: "1h" } } : {}),
    },
    client_api: {
      registration_disabled: true,
      guests_disabled: true,
      registration_shared_secret: c.registrationSharedSecret,
      enable_registration_captcha: false,
      rate_limiting: { enabled: true, threshold, cooloff_ms: cooloff, exempt_user_ids: [...exempt] },
      ...(turn ? { turn } : {}),
    },
    federation_api: {
      disable_tls_validation: false,
      key_perspectives: perspectives,
      // Ask the origin server first: the notary is only a fallback and learns less about whom we talk to.
      prefer_direct_fetch: true,
      deny_networks: deny,
      allow_networks: allow,
    },
    media_api: {
      base_path: c.mediaPath,
      max_file_size_bytes: maxUpload,
      dynamic_thumbnails: false,
      max_thumbnail_generators: 4,
      thumbnail_sizes: THUMBNAIL_SIZES.map((t) => ({ ...t })),
    },
    sync_api: {
      real_ip_header: c.realIpHeader,
      search:
        c.searchIndexPath !== undefined
          ? { enabled: true, index_path: c.searchIndexPath, in_memory: false, language: "en" }
          : { enabled: false },
    },
    logging: [{ type: "std", level: logLevel }],
  };

  // Every string double-quoted: yaml.v2 resolves plain scalars by YAML 1.1 rules (yes/no/on/off,
  // 0x.., 1:30 ...), so plain style could turn a secret into a bool or number there.
  const body = stringify(config, {
    aliasDuplicateObjects: false,
    defaultStringType: "QUOTE_DOUBLE",
    defaultKeyType: "PLAIN",
    lineWidth: 0,
    minContentWidth: 0,
  });
  return `# Generated by hardened-matrix for Dendrite v0.15.2. Holds secrets: delivered as a Swarm secret.\n${body}`;
}

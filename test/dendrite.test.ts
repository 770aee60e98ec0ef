import { test } from "node:test";
import assert from "node:assert/strict";
import { parse, parseDocument, visit } from "yaml";
import {
  DENDRITE_BASELINE_DENY_NETWORKS,
  MATRIX_ORG_KEY_SERVER,
  goDurationNanos,
  postgresConnectionString,
  renderDendriteYaml,
  type DendriteConfigInput,
} from "../components/render/dendrite";
import { PER_COMPONENT_DATABASE_KEYS, dendriteConfigSchema } from "./dendriteConfigSchema";

// A password with every character that breaks a URL or a YAML scalar, plus non-ASCII.
const DB_PASSWORD = `p:a@s/s#w'o"rd %2F\\ é?&=+ 🔑`;
// Plain YAML 1.1 (yaml.v2, what Dendrite uses) would read these as an int and a timestamp.
const REG_SECRET = "0x1234567890ABCDEF";
const TURN_SECRET = "2001-12-14t21:59:43.10-05:00";

function input(): DendriteConfigInput {
  return {
    serverName: "example.org",
    privateKeyPath: "/run/secrets/matrix_key.pem",
    database: { user: "dendrite", password: DB_PASSWORD, host: "postgres", port: 5432, name: "dendrite", maxOpenConnections: 20 },
    wellKnownServerName: "matrix.example.org:443",
    wellKnownClientName: "https://matrix.example.org",
    federationDisabled: false,
    presence: { inbound: true, outbound: false },
    registrationSharedSecret: REG_SECRET,
    rateLimiting: { threshold: 20, cooloffMs: 500, exemptUserIds: ["@bot:example.org"] },
    maxUploadBytes: 50 * 1024 * 1024,
    mediaPath: "/var/lib/dendrite/media",
    jetstreamPath: "/var/lib/dendrite/jetstream",
    searchIndexPath: "/var/lib/dendrite/searchindex",
    turn: {
      uris: ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"],
      sharedSecret: TURN_SECRET,
      userLifetime: "1h",
    },
    realIpHeader: "X-Real-Ip",
    denyNetworks: ["10.13.0.0/24", "10.10.0.0/16"],
    metricsEnabled: false,
  };
}

type Tree = Record<string, unknown>;

function rendered(i: DendriteConfigInput = input()): { text: string; config: Tree } {
  const text = renderDendriteYaml(i);
  return { text, config: parse(text) as Tree };
}

function at(tree: unknown, ...path: (string | number)[]): unknown {
  let cur = tree;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string | number, unknown>)[p];
  }
  return cur;
}

function obj(tree: unknown, ...path: string[]): Tree {
  const v = at(tree, ...path);
  assert.ok(v !== null && typeof v === "object" && !Array.isArray(v), `${path.join(".")} is not a mapping`);
  return v as Tree;
}

function mutated(edit: (c: Tree) => void): Tree {
  const c = structuredClone(rendered().config);
  edit(c);
  return c;
}

/** Every string leaf with its dotted path. */
function leaves(tree: unknown, path: string[] = []): [string, string][] {
  if (typeof tree === "string") return [[path.join("."), tree]];
  if (tree === null || typeof tree !== "object") return [];
  return Object.entries(tree).flatMap(([k, v]) => leaves(v, [...path, k]));
}

test("the schema accepts the rendered config, and a mutated copy only while unmutated", () => {
  const { config } = rendered();
  const ok = dendriteConfigSchema.safeParse(config);
  assert.ok(ok.success, ok.success ? "" : JSON.stringify(ok.error.issues, null, 2));
  assert.ok(dendriteConfigSchema.safeParse(mutated(() => undefined)).success);
});

test("the schema rejects unknown, misspelled, missing and mistyped keys", () => {
  const cases: [string, (c: Tree) => void, (string | number)[]][] = [
    ["misspelled client_api.registraton_disabled", (c) => void (obj(c, "client_api").registraton_disabled = true), ["client_api"]],
    ["missing turn_user_lifetime", (c) => void delete obj(c, "client_api", "turn").turn_user_lifetime, ["client_api", "turn", "turn_user_lifetime"]],
    ["empty turn_user_lifetime", (c) => void (obj(c, "client_api", "turn").turn_user_lifetime = ""), ["client_api", "turn", "turn_user_lifetime"]],
    ["empty turn_uris", (c) => void (obj(c, "client_api", "turn").turn_uris = []), ["client_api", "turn", "turn_uris"]],
    ["missing connection_string", (c) => void delete obj(c, "global", "database").connection_string, ["global", "database", "connection_string"]],
    ["missing server_name", (c) => void delete obj(c, "global").server_name, ["global", "server_name"]],
    ["unknown top-level section", (c) => void (c.federation = {}), []],
    ["dashed key global.server-name", (c) => void (obj(c, "global")["server-name"] = "x"), ["global"]],
    ["nested misspelling publickey", (c) => {
      const key = at(c, "federation_api", "key_perspectives", 0, "keys", 0) as Tree;
      key.publickey = key.public_key;
      delete key.public_key;
    }, ["federation_api", "key_perspectives", 0, "keys", 0]],
    ["CIDR without prefix", (c) => void (obj(c, "federation_api").deny_networks = ["::1"]), ["federation_api", "deny_networks", 0]],
    ["duration as nanoseconds", (c) => void (obj(c, "global").key_validity_period = 604800000000000), ["global", "key_validity_period"]],
    ["string where yaml.v2 wants an int", (c) => void (obj(c, "media_api").max_file_size_bytes = "10485760"), ["media_api", "max_file_size_bytes"]],
    ["config version 1", (c) => void (c.version = 1), ["version"]],
    ["jaeger tracing block", (c) => void (c.tracing = { enabled: false, jaeger: {} }), ["tracing"]],
  ];
  for (const [name, edit, path] of cases) {
    const res = dendriteConfigSchema.safeParse(mutated(edit));
    assert.equal(res.success, false, `${name}: accepted`);
    if (!res.success) {
      assert.ok(
        res.error.issues.some((i) => JSON.stringify(i.path) === JSON.stringify(path)),
        `${name}: no issue at ${JSON.stringify(path)}: ${JSON.stringify(res.error.issues)}`,
      );
    }
  }
  const typo = dendriteConfigSchema.safeParse(mutated((c) => void (obj(c, "client_api").registraton_disabled = true)));
  assert.ok(!typo.success && typo.error.issues.some((i) => i.code === "unrecognized_keys" && i.keys.includes("registraton_disabled")));
});

test("TURN is on and usable: non-empty lifetime and URIs, the shared secret set", () => {
  const t = obj(rendered().config, "client_api", "turn");
  assert.equal(t.turn_user_lifetime, "1h");
  assert.equal(goDurationNanos(t.turn_user_lifetime as string), 3.6e12);
  assert.deepEqual(t.turn_uris, input().turn?.uris);
  assert.equal(t.turn_shared_secret, TURN_SECRET);
  assert.deepEqual(Object.keys(t).sort(), ["turn_shared_secret", "turn_uris", "turn_user_lifetime"]);
});

test("TURN switched off explicitly leaves no turn block (never a half-filled one)", () => {
  const { config } = rendered({ ...input(), turn: null });
  assert.equal(at(config, "client_api", "turn"), undefined);
  assert.ok(dendriteConfigSchema.safeParse(config).success);
});

test("registration, guests, captcha, metrics, phone-home and identity servers are off", () => {
  const { config } = rendered();
  assert.equal(at(config, "client_api", "registration_disabled"), true);
  assert.equal(at(config, "client_api", "guests_disabled"), true);
  assert.equal(at(config, "client_api", "enable_registration_captcha"), false);
  assert.equal(at(config, "global", "metrics", "enabled"), false);
  assert.equal(at(config, "global", "report_stats", "enabled"), false);
  assert.deepEqual(at(config, "global", "trusted_third_party_id_servers"), []);
  assert.equal(at(config, "media_api", "dynamic_thumbnails"), false);
  assert.equal(at(config, "global", "jetstream", "in_memory"), false);
  assert.equal(at(config, "federation_api", "disable_tls_validation"), false);
  assert.deepEqual(at(config, "logging"), [{ type: "std", level: "info" }]);
  assert.equal(at(config, "version"), 2);
});

test("rate limiting, upload limit, paths, presence and federation settings come from the input", () => {
  const { config } = rendered();
  assert.deepEqual(at(config, "client_api", "rate_limiting"), { enabled: true, threshold: 20, cooloff_ms: 500, exempt_user_ids: ["@bot:example.org"] });
  assert.equal(at(config, "media_api", "max_file_size_bytes"), 50 * 1024 * 1024);
  assert.equal(at(config, "media_api", "base_path"), "/var/lib/dendrite/media");
  assert.equal(at(config, "global", "jetstream", "storage_path"), "/var/lib/dendrite/jetstream");
  assert.deepEqual(at(config, "sync_api", "search"), { enabled: true, index_path: "/var/lib/dendrite/searchindex", in_memory: false, language: "en" });
  assert.deepEqual(at(config, "global", "presence"), { enable_inbound: true, enable_outbound: false });
  assert.equal(at(config, "global", "disable_federation"), false);
  assert.equal(at(config, "global", "well_known_server_name"), "matrix.example.org:443");
  assert.equal(at(config, "global", "well_known_client_name"), "https://matrix.example.org");
  assert.equal(at(config, "sync_api", "real_ip_header"), "X-Real-Ip");
  assert.equal(at(config, "global", "dns_cache", "enabled"), true);
  assert.equal(at(rendered({ ...input(), federationDisabled: true }).config, "global", "disable_federation"), true);
  assert.deepEqual(at(rendered({ ...input(), searchIndexPath: undefined }).config, "sync_api", "search"), { enabled: false });
});

test("outbound federation denies the baseline private ranges plus the stack's own, and trusts matrix.org as a fallback notary", () => {
  const fed = obj(rendered().config, "federation_api");
  const deny = fed.deny_networks as string[];
  for (const net of [...DENDRITE_BASELINE_DENY_NETWORKS, "10.13.0.0/24", "10.10.0.0/16"]) assert.ok(deny.includes(net), `${net} not denied`);
  for (const net of ["169.254.0.0/16", "127.0.0.0/8", "100.64.0.0/10", "fc00::/7"]) assert.ok(deny.includes(net), `${net} not denied`);
  assert.equal(new Set(deny).size, deny.length);
  assert.deepEqual(fed.allow_networks, ["0.0.0.0/0"]);
  assert.equal(fed.prefer_direct_fetch, true);
  assert.deepEqual(fed.key_perspectives, [
    { server_name: "matrix.org", keys: MATRIX_ORG_KEY_SERVER.keys.map((k) => ({ key_id: k.keyId, public_key: k.publicKey })) },
  ]);
  assert.deepEqual(at(rendered({ ...input(), trustedKeyServers: [] }).config, "federation_api", "key_perspectives"), []);
});

test("no per-component database block: the monolith uses the global pool only", () => {
  const { config } = rendered();
  for (const [section, key] of PER_COMPONENT_DATABASE_KEYS) assert.equal(at(config, section, key), undefined, `${section}.${key} is set`);
  // The check above can fail: a block added by hand is found.
  const withBlock = mutated((c) => void (obj(c, "media_api").database = { connection_string: "postgres://x@y/z" }));
  assert.ok(PER_COMPONENT_DATABASE_KEYS.some(([s, k]) => at(withBlock, s, k) !== undefined));
  assert.deepEqual(Object.keys(obj(config, "global", "database")).sort(), ["conn_max_lifetime", "connection_string", "max_idle_conns", "max_open_conns"]);
  assert.equal(at(config, "global", "database", "max_open_conns"), 20);
  assert.equal(at(config, "global", "database", "max_idle_conns"), 5);
});

test("each secret appears once, only under its own key", () => {
  const { text, config } = rendered();
  const encodedPassword = new URL(at(config, "global", "database", "connection_string") as string).password;
  assert.equal(decodeURIComponent(encodedPassword), DB_PASSWORD);
  const expected: [string, string][] = [
    [REG_SECRET, "client_api.registration_shared_secret"],
    [TURN_SECRET, "client_api.turn.turn_shared_secret"],
    [encodedPassword, "global.database.connection_string"],
  ];
  for (const [secret, where] of expected) {
    const holders = leaves(config).filter(([, v]) => v.includes(secret)).map(([p]) => p);
    assert.deepEqual(holders, [where], `secret found at ${holders.join(", ")}`);
    assert.equal(text.split(secret).length - 1, 1, `secret occurs ${text.split(secret).length - 1} times in the text`);
  }
  assert.ok(!text.includes(DB_PASSWORD), "the raw (unencoded) password is in the file");
});

test("round trip: no anchors or aliases, YAML 1.1 and 1.2 read the same strings, the connection string parses back", () => {
  const { text, config } = rendered();
  const doc = parseDocument(text);
  assert.deepEqual(doc.errors, []);
  assert.deepEqual(doc.warnings, []);
  let anchorsOrAliases = 0;
  visit(doc, {
    Alias: () => void anchorsOrAliases++,
    Node: (_k, node) => void (node.anchor ? anchorsOrAliases++ : undefined),
  });
  assert.equal(anchorsOrAliases, 0);
  // yaml.v2 resolves plain scalars by YAML 1.1: the file must mean the same under both versions.
  const v11 = parse(text, { version: "1.1" }) as Tree;
  assert.deepEqual(v11, config);
  assert.equal(at(v11, "client_api", "registration_shared_secret"), REG_SECRET);
  assert.equal(at(v11, "client_api", "turn", "turn_shared_secret"), TURN_SECRET);

  const url = new URL(at(config, "global", "database", "connection_string") as string);
  assert.equal(url.protocol, "postgres:");
  assert.equal(decodeURIComponent(url.username), "dendrite");
  assert.equal(decodeURIComponent(url.password), DB_PASSWORD);
  assert.equal(url.hostname, "postgres");
  assert.equal(url.port, "5432");
  assert.equal(decodeURIComponent(url.pathname.slice(1)), "dendrite");
  assert.equal(url.searchParams.get("sslmode"), "disable");
  assert.equal([...url.searchParams.keys()].length, 1, "the password leaked into the query string");
});

test("postgresConnectionString brackets IPv6 hosts and encodes every part", () => {
  const url = new URL(
    postgresConnectionString({ user: "a b@c", password: "x/y", host: "fd00::5", port: 6543, name: "d#b", sslMode: "verify-full", maxOpenConnections: 1 }),
  );
  assert.equal(url.hostname, "[fd00::5]");
  assert.equal(url.port, "6543");
  assert.equal(decodeURIComponent(url.username), "a b@c");
  assert.equal(decodeURIComponent(url.password), "x/y");
  assert.equal(decodeURIComponent(url.pathname.slice(1)), "d#b");
  assert.equal(url.searchParams.get("sslmode"), "verify-full");
});

test("invalid input throws a clear error naming the field", () => {
  const base = input();
  const turn = base.turn!;
  const cases: [string, DendriteConfigInput, RegExp][] = [
    ["empty server name", { ...base, serverName: "" }, /serverName must be a non-empty string/],
    ["server name with a space", { ...base, serverName: "bad name.org" }, /serverName is not a Matrix server name/],
    ["server name with a bad port", { ...base, serverName: "example.org:99999" }, /serverName is not a Matrix server name/],
    ["relative key path", { ...base, privateKeyPath: "matrix_key.pem" }, /privateKeyPath must be an absolute path/],
    ["empty TURN lifetime", { ...base, turn: { ...turn, userLifetime: "" } }, /turn\.userLifetime must be a non-empty string/],
    ["TURN lifetime in days", { ...base, turn: { ...turn, userLifetime: "1d" } }, /turn\.userLifetime must be a positive Go duration/],
    ["zero TURN lifetime", { ...base, turn: { ...turn, userLifetime: "0s" } }, /turn\.userLifetime must be a positive Go duration/],
    ["no TURN URIs", { ...base, turn: { ...turn, uris: [] } }, /turn\.uris must list at least one/],
    ["not a TURN URI", { ...base, turn: { ...turn, uris: ["https://turn.example.org"] } }, /turn\.uris\[0\] is not a TURN URI/],
    ["empty TURN secret", { ...base, turn: { ...turn, sharedSecret: "" } }, /turn\.sharedSecret must be a non-empty string/],
    ["TURN left undefined", { ...base, turn: undefined as unknown as null }, /turn must be .* or null/],
    ["CIDR without prefix", { ...base, denyNetworks: ["::1"] }, /denyNetworks\[0\] must be a CIDR with a prefix length/],
    ["CIDR with a bad prefix", { ...base, denyNetworks: ["10.0.0.0/33"] }, /denyNetworks\[0\] must be a CIDR/],
    ["empty allow list", { ...base, allowNetworks: [] }, /allowNetworks must not be empty/],
    ["empty DB password", { ...base, database: { ...base.database, password: "" } }, /database\.password must be a non-empty string/],
    ["DB port 0", { ...base, database: { ...base.database, port: 0 } }, /database\.port must be an integer in \[1, 65535\]/],
    ["DB host with a space", { ...base, database: { ...base.database, host: "post gres" } }, /database\.host is not a host name/],
    ["no DB connections", { ...base, database: { ...base.database, maxOpenConnections: 0 } }, /database\.maxOpenConnections must be an integer/],
    ["unlimited uploads", { ...base, maxUploadBytes: 0 }, /maxUploadBytes must be an integer in \[1, /],
    ["fractional threshold", { ...base, rateLimiting: { ...base.rateLimiting, threshold: 1.5 } }, /rateLimiting\.threshold must be an integer/],
    ["bad exempt user", { ...base, rateLimiting: { ...base.rateLimiting, exemptUserIds: ["bot"] } }, /rateLimiting\.exemptUserIds\[0\] is not a user ID/],
    ["media inside jetstream", { ...base, mediaPath: "/var/lib/dendrite/jetstream/media" }, /mediaPath .* must not be inside or equal to jetstreamPath/],
    ["short shared secret", { ...base, registrationSharedSecret: "short" }, /registrationSharedSecret must be at least 16 characters/],
    ["secret with a newline", { ...base, registrationSharedSecret: "abcdefgh\nijklmnopq" }, /registrationSharedSecret must not contain control characters/],
    ["client well-known without scheme", { ...base, wellKnownClientName: "matrix.example.org" }, /wellKnownClientName must be a base URL/],
    ["server well-known with a path", { ...base, wellKnownServerName: "matrix.example.org/x" }, /wellKnownServerName is not a server name/],
    ["bad notary key", { ...base, trustedKeyServers: [{ serverName: "matrix.org", keys: [{ keyId: "ed25519:auto", publicKey: "abc" }] }] }, /trustedKeyServers\[0\]\.keys\[0\]\.publicKey must be an unpadded base64/],
    ["bad notary key id", { ...base, trustedKeyServers: [{ serverName: "matrix.org", keys: [{ keyId: "auto", publicKey: MATRIX_ORG_KEY_SERVER.keys[0]!.publicKey }] }] }, /keyId must match ed25519:/],
    ["metrics on", { ...base, metricsEnabled: true as unknown as false }, /metricsEnabled must be false/],
    ["header with spaces", { ...base, realIpHeader: "X Real Ip" }, /realIpHeader is not an HTTP header name/],
    ["unknown log level", { ...base, logLevel: "verbose" as unknown as "info" }, /logLevel must be one of/],
  ];
  for (const [name, bad, message] of cases) {
    assert.throws(() => renderDendriteYaml(bad), (err: unknown) => {
      assert.ok(err instanceof Error, `${name}: not an Error`);
      assert.match(err.message, /^renderDendriteYaml: /, name);
      assert.match(err.message, message, name);
      return true;
    }, name);
  }
});

test("Go duration parsing matches time.ParseDuration on the forms we use", () => {
  assert.equal(goDurationNanos("1h"), 3.6e12);
  assert.equal(goDurationNanos("1h30m"), 5.4e12);
  assert.equal(goDurationNanos("168h0m0s"), 168 * 3.6e12);
  assert.equal(goDurationNanos("1.5s"), 1.5e9);
  assert.equal(goDurationNanos("0"), 0);
  for (const bad of ["", "1d", "h", "1", "1 h", "-"]) assert.equal(goDurationNanos(bad), undefined, bad);
});

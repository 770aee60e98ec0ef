import { isIPv4, isIPv6 } from "node:net";
import { z } from "zod";

/**
 * Strict model of Dendrite v0.15.2's config file (element-hq/dendrite tag v0.15.2, yaml tags of the
 * structs in setup/config/*.go). Dendrite parses with yaml.v2 non-strictly and ignores unknown keys;
 * here every object is strict, so a misspelled key fails. Keys our deployment needs are required;
 * the others are optional with their upstream types. Value checks mirror the upstream Verify
 * functions where a wrong value would be accepted silently or fail only at start-up.
 * Written independently of components/render/dendrite.ts: it is the oracle for that renderer.
 */

// time.Duration fields: yaml.v2 parses a string with time.ParseDuration. A bare integer would be
// nanoseconds (a classic mistake), so only strings are accepted here.
const GO_DURATION = /^(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/;
const goDuration = z.string().regex(GO_DURATION, { message: "must be a Go duration string such as 5m or 168h" });
const positiveGoDuration = goDuration.refine((v) => v !== "0" && /[1-9]/.test(v), { message: "must be a positive duration" });

// Go net.ParseCIDR needs "/prefix"; gomatrixserverlib's inRange stops at the first unparsable entry.
function isGoCidr(v: string): boolean {
  const m = /^([^/%]+)\/(0|[1-9]\d{0,2})$/.exec(v);
  if (!m) return false;
  const [, addr, len] = m as unknown as [string, string, string];
  if (isIPv4(addr)) return Number(len) <= 32;
  if (isIPv6(addr)) return Number(len) <= 128;
  return false;
}
const cidr = z.string().refine(isGoCidr, { message: "must be a CIDR net.ParseCIDR accepts (address/prefix)" });

const goInt = z.number().int();
const nonNegativeInt = goInt.min(0); // upstream checkPositive: zero included
const nonEmpty = z.string().min(1);

// setup/config/config_global.go: DatabaseOptions (also used by every per-component `database` block)
const databaseOptions = z.strictObject({
  connection_string: z.string().optional(),
  max_open_conns: goInt.optional(),
  max_idle_conns: goInt.optional(),
  conn_max_lifetime: goInt.optional(),
});

// setup/config/config_global.go: Global.DatabaseOptions, the monolith pool (required by our deployment)
const globalDatabase = z.strictObject({
  connection_string: nonEmpty.refine(
    (v) => {
      try {
        const u = new URL(v);
        return (u.protocol === "postgres:" || u.protocol === "postgresql:") && u.hostname !== "" && u.pathname.length > 1;
      } catch {
        return false;
      }
    },
    { message: "must be a postgres:// URL with host and database" },
  ),
  max_open_conns: goInt.min(1),
  max_idle_conns: nonNegativeInt,
  conn_max_lifetime: goInt,
});

// setup/config/config.go: Dendrite (top level) and LogrusHook; types/levels from internal/log_unix.go
const logrusHook = z.strictObject({
  type: z.enum(["std", "file", "syslog"]),
  level: z.enum(["panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"]),
  params: z.record(z.string(), z.unknown()).optional(), // map[string]interface{} upstream
});

// setup/config/config_global.go: Global (+ fclient.SigningIdentity inlined: server_name, key_id)
const global = z.strictObject({
  server_name: nonEmpty,
  key_id: z.string().optional(), // overwritten by the PEM's Key-ID header at load
  private_key: nonEmpty,
  old_private_keys: z
    .array(
      z.strictObject({
        private_key: z.string().optional(),
        public_key: z.string().optional(),
        key_id: z.string().optional(),
        expired_at: nonNegativeInt.optional(),
      }),
    )
    .optional(),
  key_validity_period: positiveGoDuration,
  database: globalDatabase,
  well_known_server_name: z.string().optional(),
  well_known_client_name: z
    .string()
    .refine((v) => v === "" || v.startsWith("http://") || v.startsWith("https://"), { message: "must start with http:// or https://" })
    .optional(),
  well_known_sliding_sync_proxy: z.string().optional(),
  disable_federation: z.boolean(),
  presence: z.strictObject({ enable_inbound: z.boolean(), enable_outbound: z.boolean() }),
  trusted_third_party_id_servers: z.array(z.string()),
  // setup/config/config_jetstream.go: JetStream
  jetstream: z.strictObject({
    storage_path: nonEmpty,
    addresses: z.array(z.string()).optional(),
    topic_prefix: z.string().optional(),
    js_domain: z.string().optional(),
    in_memory: z.boolean(),
    disable_tls_validation: z.boolean().optional(),
    credentials_path: z.string().optional(),
  }),
  // setup/config/config_global.go: Metrics
  metrics: z.strictObject({
    enabled: z.boolean(),
    basic_auth: z.strictObject({ username: z.string().optional(), password: z.string().optional() }).optional(),
  }),
  // setup/config/config_global.go: Sentry
  sentry: z.strictObject({ enabled: z.boolean().optional(), dsn: z.string().optional(), environment: z.string().optional() }).optional(),
  // setup/config/config_global.go: DNSCacheOptions
  dns_cache: z.strictObject({ enabled: z.boolean(), cache_size: nonNegativeInt, cache_lifetime: goDuration }),
  // setup/config/config_global.go: ServerNotices
  server_notices: z
    .strictObject({
      enabled: z.boolean().optional(),
      local_part: z.string().optional(),
      display_name: z.string().optional(),
      avatar_url: z.string().optional(),
      room_name: z.string().optional(),
    })
    .optional(),
  // setup/config/config_global.go: ReportStats
  report_stats: z.strictObject({ enabled: z.boolean(), endpoint: z.string().optional() }),
  // setup/config/config_global.go: Cache (max_size_estimated is a DataUnit: number or "<n>(kb|mb|gb|tb)")
  cache: z
    .strictObject({
      max_size_estimated: z.union([nonNegativeInt, z.string().regex(/^\d+(\.\d+)?(kb|mb|gb|tb)?$/i)]).optional(),
      max_age: goDuration.optional(),
    })
    .optional(),
});

// setup/config/config_appservice.go: AppServiceAPI
const appServiceApi = z.strictObject({
  disable_tls_validation: z.boolean().optional(),
  legacy_auth: z.boolean().optional(),
  legacy_paths: z.boolean().optional(),
  config_files: z.array(z.string()).optional(),
});

// setup/config/config_clientapi.go: TURN. Optional as a block (TURN may be switched off), but a
// present block must work: an empty lifetime or URI list makes /voip/turnServer answer {} (clientapi/routing/voip.go).
const turn = z.strictObject({
  turn_user_lifetime: positiveGoDuration,
  turn_uris: z.array(z.string().regex(/^turns?:/, { message: "must be a turn: or turns: URI" })).min(1),
  turn_shared_secret: nonEmpty,
  turn_username: z.string().optional(),
  turn_password: z.string().optional(),
});

// setup/config/config_clientapi.go: ClientAPI and RateLimiting
const clientApi = z.strictObject({
  registration_disabled: z.boolean(),
  registration_requires_token: z.boolean().optional(),
  registration_shared_secret: nonEmpty,
  guests_disabled: z.boolean(),
  enable_registration_captcha: z.boolean().optional(),
  recaptcha_api_js_url: z.string().optional(),
  recaptcha_sitekey_class: z.string().optional(),
  recaptcha_form_field: z.string().optional(),
  recaptcha_public_key: z.string().optional(),
  recaptcha_private_key: z.string().optional(),
  recaptcha_bypass_secret: z.string().optional(),
  recaptcha_siteverify_api: z.string().optional(),
  turn: turn.optional(),
  rate_limiting: z.strictObject({
    enabled: z.boolean(),
    threshold: nonNegativeInt,
    cooloff_ms: nonNegativeInt,
    exempt_user_ids: z.array(z.string()).optional(),
  }),
});

// setup/config/config_federationapi.go: FederationAPI, KeyPerspective, KeyPerspectiveTrustKey
const federationApi = z.strictObject({
  database: databaseOptions.optional(),
  send_max_retries: nonNegativeInt.optional(),
  enable_relays: z.boolean().optional(),
  p2p_retries_until_assumed_offline: nonNegativeInt.optional(),
  disable_tls_validation: z.boolean().optional(),
  disable_http_keepalives: z.boolean().optional(),
  key_perspectives: z.array(
    z.strictObject({
      server_name: nonEmpty,
      keys: z
        .array(
          z.strictObject({
            key_id: z.string().regex(/^ed25519:[A-Za-z0-9_]+$/),
            public_key: z.string().regex(/^[A-Za-z0-9+/]{43}$/, { message: "must be unpadded base64 of 32 bytes" }),
          }),
        )
        .min(1),
    }),
  ),
  prefer_direct_fetch: z.boolean(),
  deny_networks: z.array(cidr).min(1),
  allow_networks: z.array(cidr).min(1),
});

// setup/config/config_keyserver.go: KeyServer
const keyServer = z.strictObject({ database: databaseOptions.optional() });

// setup/config/config_mediaapi.go: MediaAPI and config.go ThumbnailSize
const mediaApi = z.strictObject({
  database: databaseOptions.optional(),
  base_path: nonEmpty,
  max_file_size_bytes: nonNegativeInt,
  dynamic_thumbnails: z.boolean(),
  max_thumbnail_generators: nonNegativeInt.optional(),
  thumbnail_sizes: z
    .array(z.strictObject({ width: nonNegativeInt, height: nonNegativeInt, method: z.enum(["crop", "scale"]).optional() }))
    .optional(),
});

// setup/config/config_roomserver.go: RoomServer
const roomServer = z.strictObject({
  default_room_version: z.string().optional(),
  database: databaseOptions.optional(),
});

// setup/config/config_syncapi.go: SyncAPI and Fulltext (`search`)
const syncApi = z.strictObject({
  database: databaseOptions.optional(),
  real_ip_header: nonEmpty,
  search: z
    .strictObject({
      enabled: z.boolean(),
      index_path: z.string().optional(),
      in_memory: z.boolean().optional(),
      language: z.string().optional(),
    })
    .refine((s) => !s.enabled || (!!s.index_path && s.language !== ""), { message: "enabled search needs index_path" })
    .optional(),
});

// setup/config/config_userapi.go: UserAPI
const userApi = z.strictObject({
  bcrypt_cost: goInt.min(4).max(31).optional(),
  openid_token_lifetime_ms: nonNegativeInt.optional(),
  push_gateway_disable_tls_validation: z.boolean().optional(),
  account_database: databaseOptions.optional(),
  auto_join_rooms: z.array(z.string()).optional(),
  worker_count: nonNegativeInt.optional(),
});

// setup/config/config_relayapi.go: RelayAPI
const relayApi = z.strictObject({ database: databaseOptions.optional() });

// setup/config/config_mscs.go: MSCs
const mscs = z.strictObject({ mscs: z.array(z.string()).optional(), database: databaseOptions.optional() });

// setup/config/config.go: Dendrite.Tracing. `jaeger` (uber jaeger-client-go's Configuration) is not
// modelled: we never render it, so its presence fails here.
const tracing = z.strictObject({ enabled: z.boolean().optional() });

// setup/config/config.go: Dendrite
export const dendriteConfigSchema = z.strictObject({
  version: z.literal(2),
  global,
  app_service_api: appServiceApi.optional(),
  client_api: clientApi,
  federation_api: federationApi,
  key_server: keyServer.optional(),
  media_api: mediaApi,
  room_server: roomServer.optional(),
  sync_api: syncApi,
  user_api: userApi.optional(),
  relay_api: relayApi.optional(),
  mscs: mscs.optional(),
  tracing: tracing.optional(),
  logging: z.array(logrusHook).min(1),
});

export type DendriteConfigFile = z.infer<typeof dendriteConfigSchema>;

/** Sections that can carry their own `database` block upstream (the monolith must use global.database only). */
export const PER_COMPONENT_DATABASE_KEYS: readonly (readonly [string, string])[] = [
  ["federation_api", "database"],
  ["key_server", "database"],
  ["media_api", "database"],
  ["room_server", "database"],
  ["sync_api", "database"],
  ["user_api", "account_database"],
  ["relay_api", "database"],
  ["mscs", "database"],
];

import { z } from "zod";

/**
 * Strict model of Headscale v0.29.2's config file: every key viper reads in
 * juanfont/headscale v0.29.2 hscontrol/types/config.go (its viper.GetX and IsSet calls, which match the
 * keys of config-example.yaml at that tag). Headscale itself ignores unknown keys; here every object
 * is strict, so a misspelled key fails. Cross-checks mirror validateServerConfig and
 * isSafeServerURL. Written apart from components/render/headscale.ts: it is the oracle for it.
 * `headscale configtest` would be the real judge, but no headscale binary can be had here.
 */

const GO_DURATION = /^(?:0|(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/;
const goDuration = z.string().regex(GO_DURATION);
const hostPort = z.string().regex(/^(?:[0-9.]*|\[[0-9a-f:]+\]):\d{1,5}$/);
const absPath = z.string().regex(/^\//);
const toSeconds = (d: string): number => {
  let total = 0;
  for (const [, n, unit] of d.matchAll(/(\d+(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(n) * ({ ns: 1e-9, us: 1e-6, µs: 1e-6, μs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 } as Record<string, number>)[unit!]!;
  }
  return total;
};

const derpServer = z.strictObject({
  enabled: z.boolean(),
  region_id: z.number().int().optional(),
  region_code: z.string().optional(),
  region_name: z.string().optional(),
  verify_clients: z.boolean().optional(),
  stun_listen_addr: hostPort.optional(),
  private_key_path: absPath.optional(),
  automatically_add_embedded_derp_region: z.boolean().optional(),
  ipv4: z.string().optional(),
  ipv6: z.string().optional(),
  stun: z.strictObject({ enabled: z.boolean() }).optional(),
});

const oidc = z.strictObject({
  enabled: z.boolean().optional(),
  only_start_if_oidc_is_available: z.boolean().optional(),
  issuer: z.string().optional(),
  client_id: z.string().optional(),
  client_secret: z.string().optional(),
  client_secret_path: z.string().optional(),
  scope: z.array(z.string()).optional(),
  extra_params: z.record(z.string(), z.string()).optional(),
  allowed_domains: z.array(z.string()).optional(),
  allowed_groups: z.array(z.string()).optional(),
  allowed_users: z.array(z.string()).optional(),
  email_verified_required: z.boolean().optional(),
  use_expiry_from_token: z.boolean().optional(),
  pkce: z.strictObject({ enabled: z.boolean().optional(), method: z.enum(["plain", "S256"]).optional() }).optional(),
});

export const headscaleConfigSchema = z
  .strictObject({
    server_url: z.string().regex(/^https?:\/\//, { message: "server_url must start with https:// or http://" }),
    listen_addr: hostPort,
    metrics_listen_addr: hostPort,
    grpc_listen_addr: hostPort,
    grpc_allow_insecure: z.boolean(),
    trusted_proxies: z.array(z.string().refine((v) => v !== "0.0.0.0/0" && v !== "::/0", { message: "0.0.0.0/0 and ::/0 are not allowed" })),
    noise: z.strictObject({ private_key_path: absPath }),
    prefixes: z.strictObject({
      v4: z.string().optional(),
      v6: z.string().optional(),
      allocation: z.enum(["sequential", "random"]),
    }),
    derp: z.strictObject({
      server: derpServer,
      urls: z.array(z.url()),
      paths: z.array(absPath),
      auto_update_enabled: z.boolean(),
      update_frequency: goDuration,
    }),
    disable_check_updates: z.boolean(),
    ephemeral_node_inactivity_timeout: goDuration.optional(),
    node: z.strictObject({
      expiry: z.union([z.literal(0), z.string()]),
      ephemeral: z.strictObject({ inactivity_timeout: goDuration }),
      routes: z.strictObject({ ha: z.strictObject({ probe_interval: goDuration, probe_timeout: goDuration }) }).optional(),
    }),
    database: z.strictObject({
      type: z.enum(["sqlite", "sqlite3", "postgres"]),
      debug: z.boolean().optional(),
      gorm: z
        .strictObject({
          prepare_stmt: z.boolean().optional(),
          parameterized_queries: z.boolean().optional(),
          skip_err_record_not_found: z.boolean().optional(),
          slow_threshold: z.number().int().optional(),
        })
        .optional(),
      sqlite: z.strictObject({ path: absPath, write_ahead_log: z.boolean().optional(), wal_autocheckpoint: z.number().int().optional() }).optional(),
      postgres: z
        .strictObject({
          host: z.string().optional(),
          port: z.number().int().optional(),
          name: z.string().optional(),
          user: z.string().optional(),
          pass: z.string().optional(),
          max_open_conns: z.number().int().optional(),
          max_idle_conns: z.number().int().optional(),
          conn_max_idle_time_secs: z.number().int().optional(),
          ssl: z.union([z.boolean(), z.string()]).optional(),
        })
        .optional(),
    }),
    acme_url: z.url(),
    acme_email: z.string(),
    tls_letsencrypt_hostname: z.string(),
    tls_letsencrypt_cache_dir: absPath,
    tls_letsencrypt_challenge_type: z.enum(["HTTP-01", "TLS-ALPN-01"], { message: "the only supported values for tls_letsencrypt_challenge_type are HTTP-01 and TLS-ALPN-01" }),
    tls_letsencrypt_listen: z.string().optional(),
    tls_cert_path: z.string(),
    tls_key_path: z.string(),
    log: z.strictObject({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "panic", "disabled"]), format: z.enum(["text", "json"]) }),
    policy: z.strictObject({ mode: z.enum(["file", "database"]), path: z.string() }),
    dns: z.strictObject({
      magic_dns: z.boolean(),
      base_domain: z.string(),
      override_local_dns: z.boolean(),
      nameservers: z.strictObject({ global: z.array(z.string()), split: z.record(z.string(), z.array(z.string())) }),
      search_domains: z.array(z.string()),
      extra_records: z.array(z.strictObject({ name: z.string(), type: z.enum(["A", "AAAA"]), value: z.string() })).optional(),
      extra_records_path: z.string().optional(),
    }),
    unix_socket: absPath,
    unix_socket_permission: z.string().regex(/^0[0-7]{3}$/),
    oidc: oidc.optional(),
    logtail: z.strictObject({ enabled: z.boolean() }),
    taildrop: z.strictObject({ enabled: z.boolean() }),
    auto_update: z.strictObject({ enabled: z.boolean() }).optional(),
    cli: z.strictObject({ address: z.string().optional(), api_key: z.string().optional(), timeout: goDuration.optional(), insecure: z.boolean().optional() }).optional(),
    tuning: z
      .strictObject({
        batch_change_delay: goDuration.optional(),
        batcher_workers: z.number().int().optional(),
        node_mapsession_buffered_chan_size: z.number().int().optional(),
        node_store_batch_size: z.number().int().optional(),
        node_store_batch_timeout: goDuration.optional(),
        notifier_send_timeout: goDuration.optional(),
        register_cache_expiration: goDuration.optional(),
        register_cache_max_entries: z.number().int().optional(),
      })
      .optional(),
  })
  .superRefine((c, ctx) => {
    const fail = (message: string) => ctx.addIssue({ code: "custom", message });
    // validateServerConfig
    if (c.tls_letsencrypt_hostname !== "" && (c.tls_cert_path !== "" || c.tls_key_path !== "")) fail("set either tls_letsencrypt_hostname or tls_cert_path/tls_key_path, not both");
    if (c.tls_letsencrypt_hostname !== "" && c.tls_letsencrypt_challenge_type === "TLS-ALPN-01" && !c.listen_addr.endsWith(":443")) fail("TLS-ALPN-01 needs listen_addr on :443");
    if (toSeconds(c.node.ephemeral.inactivity_timeout) <= 65) fail("node.ephemeral.inactivity_timeout must be more than 65s");
    if (c.dns.override_local_dns && c.dns.nameservers.global.length === 0) fail("dns.nameservers.global must be set when dns.override_local_dns is true");
    if (c.dns.extra_records !== undefined && c.dns.extra_records_path !== undefined) fail("dns.extra_records and dns.extra_records_path are mutually exclusive");
    if (c.dns.magic_dns && c.dns.base_domain === "") fail("dns.base_domain must be set when using MagicDNS");
    if (!c.prefixes.v4 && !c.prefixes.v6) fail("no IPv4 or IPv6 prefix configured");
    if (c.derp.server.enabled === false && c.derp.urls.length === 0 && c.derp.paths.length === 0) fail("no DERP map: neither the embedded server nor urls nor paths");
    // isSafeServerURL (with a base domain set)
    if (c.dns.base_domain !== "") {
      const host = new URL(c.server_url).hostname;
      if (host === c.dns.base_domain) fail("server_url cannot use the same domain as base_domain");
      else if (host.endsWith(`.${c.dns.base_domain}`)) fail("server_url cannot be part of base_domain");
    }
  });

/** Members of hscontrol/policy/v2/types.go Policy (decoded with json.RejectUnknownMembers). */
export const headscalePolicySchema = z.strictObject({
  groups: z.record(z.string().regex(/^group:/), z.array(z.string().regex(/@/, { message: "username must contain @" }))).optional(),
  hosts: z.record(z.string(), z.string()).optional(),
  tagOwners: z.record(z.string().regex(/^tag:/), z.array(z.string())).optional(),
  acls: z.array(z.strictObject({ action: z.literal("accept"), proto: z.string().optional(), src: z.array(z.string()), dst: z.array(z.string()) })).optional(),
  grants: z.array(z.unknown()).optional(),
  nodeAttrs: z.array(z.unknown()).optional(),
  autoApprovers: z.unknown().optional(),
  ssh: z
    .array(
      z.strictObject({
        action: z.enum(["accept", "check"]),
        src: z.array(z.string()),
        // Since 0.28 `*` is not an SSH destination (FACTS.md).
        dst: z.array(z.string().refine((v) => v !== "*", { message: "* is not an SSH destination" })),
        users: z.array(z.string()),
        checkPeriod: z.string().optional(),
        acceptEnv: z.array(z.string()).optional(),
      }),
    )
    .optional(),
  // hscontrol/policy/v2/test.go PolicyTest
  tests: z.array(z.strictObject({ src: z.string(), proto: z.string().optional(), accept: z.array(z.string()).optional(), deny: z.array(z.string()).optional() })).optional(),
  sshTests: z.array(z.unknown()).optional(),
  randomizeClientPort: z.boolean().optional(),
});

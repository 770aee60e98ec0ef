import { stringify } from "yaml";
import { tailnetPolicy, type TailnetPolicyInput } from "./tailscaleAcl";

/**
 * Headscale 0.29.x, the self-hosted tailnet control server, as plain files. Every key is checked
 * against juanfont/headscale v0.29.2 config-example.yaml and hscontrol/types/config.go (viper keys
 * and validateServerConfig); test/headscaleConfigSchema.ts is the strict model of those keys.
 */

/** Where the image keeps its state (config-example.yaml paths); a retained volume is mounted here. */
export const HEADSCALE_STATE_DIR = "/var/lib/headscale";
export const HEADSCALE_CONFIG_DIR = "/etc/headscale";
export const HEADSCALE_POLICY_PATH = `${HEADSCALE_CONFIG_DIR}/policy.hujson`;
/** The CLI talks to the server over this socket without an API key (config-example.yaml unix_socket). */
export const HEADSCALE_SOCKET = "/var/run/headscale/headscale.sock";

export const HEADSCALE_PORTS = {
  /** Control protocol, REST API (Bearer API key) and TLS-ALPN-01: public. */
  https: 443,
  /** Only the bootstrap's sealed blob, for a bounded time (components/render/headscaleBootstrap.ts). */
  http: 80,
  /** Embedded DERP's STUN, public only when DERP is enabled. */
  stun: 3478,
  /** Bound to the container's loopback: never published. */
  metrics: 9090,
  grpc: 50443,
} as const;

/** The MagicDNS suffix: `.internal` is reserved for private use (ICANN, 2024), so it never shadows a public name. */
export const HEADSCALE_BASE_DOMAIN = "hm.internal";

export type AcmeCa = "letsencrypt" | "letsencrypt-staging";
// Let's Encrypt's ACME directories (letsencrypt.org/docs/staging-environment).
const ACME_URLS: Record<AcmeCa, string> = {
  letsencrypt: "https://acme-v02.api.letsencrypt.org/directory",
  "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
};

export interface HeadscaleConfigInput {
  /** Public name of the control server, e.g. hs.example.org (its own A record). */
  serverFqdn: string;
  acmeEmail: string;
  acmeCa: AcmeCa;
  /** Run the embedded DERP relay (opens 3478/udp) instead of relying on Tailscale's public DERPs. */
  derp: boolean;
  baseDomain?: string;
}

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

/**
 * The same test Headscale runs at start (hscontrol/types/config.go isSafeServerURL): the server's
 * host may not equal the MagicDNS base domain nor sit under it, or clients would resolve the control
 * server through MagicDNS and lose it.
 */
export function serverUrlClashes(serverFqdn: string, baseDomain: string): boolean {
  return serverFqdn === baseDomain || serverFqdn.endsWith(`.${baseDomain}`);
}

export function headscaleConfig(input: HeadscaleConfigInput): Record<string, unknown> {
  const baseDomain = input.baseDomain ?? HEADSCALE_BASE_DOMAIN;
  const problems: string[] = [];
  if (!DNS_NAME.test(input.serverFqdn)) problems.push(`serverFqdn "${input.serverFqdn}" is not a DNS name`);
  if (!DNS_NAME.test(baseDomain)) problems.push(`baseDomain "${baseDomain}" is not a DNS name`);
  if (serverUrlClashes(input.serverFqdn, baseDomain)) problems.push(`serverFqdn "${input.serverFqdn}" equals or sits under the MagicDNS base domain "${baseDomain}"`);
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(input.acmeEmail)) problems.push(`acmeEmail "${input.acmeEmail}" is not an email address`);
  if (problems.length > 0) throw new Error(`invalid Headscale config input:\n  - ${problems.join("\n  - ")}`);
  const state = HEADSCALE_STATE_DIR;
  return {
    server_url: `https://${input.serverFqdn}`,
    // Headscale terminates TLS itself: nothing else runs on this node before the swarm exists.
    listen_addr: `0.0.0.0:${HEADSCALE_PORTS.https}`,
    // The container's own loopback: not reachable from the host's interfaces, and not published.
    metrics_listen_addr: `127.0.0.1:${HEADSCALE_PORTS.metrics}`,
    grpc_listen_addr: `127.0.0.1:${HEADSCALE_PORTS.grpc}`,
    grpc_allow_insecure: false,
    // No proxy in front: X-Forwarded-For from anyone is ignored.
    trusted_proxies: [],
    noise: { private_key_path: `${state}/noise_private.key` },
    // Tailscale's ranges (the stack keeps its other ranges clear of 100.64.0.0/10: settings.ts).
    prefixes: { v4: "100.64.0.0/10", v6: "fd7a:115c:a1e0::/48", allocation: "sequential" },
    derp: {
      server: input.derp
        ? {
            enabled: true,
            region_id: 999,
            region_code: "headscale",
            region_name: "Headscale Embedded DERP",
            verify_clients: true,
            stun_listen_addr: `0.0.0.0:${HEADSCALE_PORTS.stun}`,
            private_key_path: `${state}/derp_server_private.key`,
            automatically_add_embedded_derp_region: true,
          }
        : { enabled: false },
      // With our own relay, Tailscale's public DERP map is not fetched at all.
      urls: input.derp ? [] : ["https://controlplane.tailscale.com/derpmap/default"],
      paths: [],
      auto_update_enabled: !input.derp,
      update_frequency: "3h",
    },
    // No version check calls home.
    disable_check_updates: true,
    // 0: nodes never expire (tagged nodes never do anyway, FACTS.md).
    node: { expiry: "0", ephemeral: { inactivity_timeout: "30m" } },
    // SQLite: upstream recommends it and discourages Postgres (config-example.yaml).
    database: {
      type: "sqlite",
      debug: false,
      sqlite: { path: `${state}/db.sqlite`, write_ahead_log: true, wal_autocheckpoint: 1000 },
    },
    acme_url: ACME_URLS[input.acmeCa],
    acme_email: input.acmeEmail,
    tls_letsencrypt_hostname: input.serverFqdn,
    tls_letsencrypt_cache_dir: `${state}/cache`,
    // TLS-ALPN-01 answers on 443 itself (hscontrol/app.go getTLSSettings; upstream warns listen_addr
    // must end in :443), so no ACME listener takes port 80: it is
    // left to the bootstrap's bounded blob server, and nothing listens there afterwards.
    tls_letsencrypt_challenge_type: "TLS-ALPN-01",
    tls_cert_path: "",
    tls_key_path: "",
    log: { level: "info", format: "json" },
    policy: { mode: "file", path: HEADSCALE_POLICY_PATH },
    dns: {
      magic_dns: true,
      base_domain: baseDomain,
      // Admins' own resolvers stay theirs: the tailnet only adds names under the base domain.
      override_local_dns: false,
      nameservers: { global: [], split: {} },
      search_domains: [],
    },
    unix_socket: HEADSCALE_SOCKET,
    unix_socket_permission: "0770",
    logtail: { enabled: false },
    // Nodes exchange no files over the tailnet.
    taildrop: { enabled: false },
  };
}

export function renderHeadscaleConfig(input: HeadscaleConfigInput): string {
  return stringify(headscaleConfig(input), { lineWidth: 0 });
}

/**
 * The tailnet policy in Headscale's format (HuJSON, hscontrol/policy/v2/types.go Policy, which
 * rejects unknown members): the very rules of the Tailscale policy (render/tailscaleAcl.ts), so
 * the two VPN modes cannot drift. Admins are emails: Headscale resolves a user token by email or
 * name (types.go Username.resolveUser), so each admin's Headscale user carries that email.
 */
export function renderHeadscalePolicy(p: TailnetPolicyInput): string {
  const policy = tailnetPolicy(p);
  return `// Written by hardened-matrix; edits here are overwritten. Same rules as the Tailscale policy.\n${JSON.stringify(policy, null, 2)}\n`;
}

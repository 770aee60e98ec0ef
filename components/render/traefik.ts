import { stringify } from "yaml";

/** Ports Traefik listens on inside its container: unprivileged, so it needs no capability. */
export const TRAEFIK_PORTS = { web: 8080, websecure: 8443, federation: 8448, admin: 9443, ping: 8082, adminLoopback: 9444, funnel: 8081 } as const;
/** Ingress funnel: the plain-HTTP entrypoint the Funnel container proxies to (Tailscale ended TLS). */
export const FUNNEL_ENTRYPOINT = "funnel";
export const TRAEFIK_STATIC_PATH = "/etc/traefik/traefik.yml";
export const TRAEFIK_DYNAMIC_PATH = "/etc/traefik/dynamic.yml";
export const ACME_STORAGE_DIR = "/acme";
export const CERT_RESOLVER = "le";
export const SECURITY_HEADERS = "security-headers@file";

export const ACME_SERVERS = {
  letsencrypt: "https://acme-v02.api.letsencrypt.org/directory",
  "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
} as const;

/**
 * The slowest uplink an upload of maxUploadMb must still fit through: 2 Mbit/s, a poor mobile or
 * ADSL uplink. Traefik's readTimeout covers the whole request, body included
 * (traefik/traefik v3.7 pkg/config/static/static_config.go RespondingTimeouts.ReadTimeout, handed
 * to net/http Server.ReadTimeout in pkg/server/server_entrypoint_tcp.go).
 */
export const SLOW_UPLINK_BITS_PER_SECOND = 2_000_000;
/** Headers, TLS, TCP slow start and the wait for Dendrite: the old flat timeout, kept as headroom. */
export const READ_TIMEOUT_HEADROOM_SECONDS = 60;
/**
 * Federation requests are bounded transactions (Matrix server-server API: at most 50 PDUs of at most
 * 64 KiB and 100 EDUs, a few MiB), so the federation entrypoint keeps the short timeout.
 */
export const FEDERATION_READ_TIMEOUT_SECONDS = 60;

/**
 * Seconds an upload of `maxUploadMb` MiB needs at the slow uplink, plus headroom. Behind Traefik,
 * Dendrite v0.15.2 ends every request 5 minutes after its headers (element-hq/dendrite
 * setup/base/base.go: WriteTimeout = HTTPServerTimeout), so past about 71 MiB a 2 Mbit/s upload
 * fails there whatever this allows.
 */
export function uploadReadTimeoutSeconds(maxUploadMb: number): number {
  const bodySeconds = Math.ceil((maxUploadMb * 1024 * 1024 * 8) / SLOW_UPLINK_BITS_PER_SECOND);
  return bodySeconds + READ_TIMEOUT_HEADROOM_SECONDS;
}

/** TLS options for the admin entrypoint: the same protocol floor, but a client without SNI gets an answer. */
export const ADMIN_TLS_OPTIONS = "admin";

export interface TraefikStaticInput {
  /** Published HTTPS port the web entrypoint redirects to. */
  publishedHttpsPort: number;
  socketProxyEndpoint: string;
  /** Overlay network Traefik reaches routed services on. */
  edgeNetwork: string;
  /** Largest media upload (MiB): sets how long the client entrypoint waits for a request body. */
  maxUploadMb: number;
  dashboard: boolean;
  /**
   * Ingress funnel: add the plain-HTTP `funnel` entrypoint, trusting the X-Forwarded-* headers of
   * connections from `trustedIPs` only (the Funnel network's subnet: the Funnel container alone).
   */
  funnel?: { trustedIPs: string[] };
  acme?: {
    ca: keyof typeof ACME_SERVERS;
    email: string;
    /** Path of the Cloudflare token file (Swarm secret) for DNS-01; HTTP-01 when absent. */
    dnsTokenFile?: string;
  };
}

export interface TraefikDynamicInput {
  /** False only where Traefik serves its own self-signed default certificate (the local target). */
  sniStrict: boolean;
  dashboard?: { usersFile: string; allowedSourceRanges: string[] };
}

function nonEmpty(list: string[], what: string): string[] {
  if (list.length === 0) throw new Error(`traefik: ${what} is empty`);
  return [...list];
}

export function renderTraefikStatic(i: TraefikStaticInput): string {
  const tls = i.acme ? { certResolver: CERT_RESOLVER } : {};
  const secureEntryPoint = (port: number, readTimeoutSeconds: number) => ({
    address: `:${port}`,
    http: { tls, middlewares: [SECURITY_HEADERS] },
    // Bounds slowloris and idle-connection exhaustion; readTimeout covers headers and body alike.
    transport: { respondingTimeouts: { readTimeout: `${readTimeoutSeconds}s`, writeTimeout: "0s", idleTimeout: "180s" } },
  });
  const config: Record<string, unknown> = {
    global: { checkNewVersion: false, sendAnonymousUsage: false },
    log: { level: "INFO", format: "json" },
    // Audit trail without credentials: every header is dropped (Authorization, Cookie, ...) except the
    // user agent, and the query string is cut from RequestPath, since clients may send ?access_token=.
    // queryParameters exists since v3.6.18/v3.7.2 (traefik/traefik pkg/observability/types/logs.go
    // FieldQueryParameters; pkg/middlewares/accesslog/logger.go builds RequestPath without RawQuery).
    accessLog: {
      format: "json",
      fields: { defaultMode: "keep", headers: { defaultMode: "drop", names: { "User-Agent": "keep" } }, queryParameters: { defaultMode: "drop" } },
    },
    ping: { entryPoint: "ping" },
    entryPoints: {
      web: {
        address: `:${TRAEFIK_PORTS.web}`,
        http: { redirections: { entryPoint: { to: `:${i.publishedHttpsPort}`, scheme: "https", permanent: true } } },
      },
      websecure: { ...secureEntryPoint(TRAEFIK_PORTS.websecure, uploadReadTimeoutSeconds(i.maxUploadMb)), asDefault: true },
      federation: secureEntryPoint(TRAEFIK_PORTS.federation, FEDERATION_READ_TIMEOUT_SECONDS),
      // admin: TLS is ended by a TCP router (dynamic config), which alone can pick TLS options for a
      // client that sends no SNI; it hands the plain request to the dashboard entrypoint on loopback.
      ...(i.dashboard
        ? { admin: { address: `:${TRAEFIK_PORTS.admin}` }, "admin-loopback": { address: `127.0.0.1:${TRAEFIK_PORTS.adminLoopback}` } }
        : {}),
      ping: { address: `:${TRAEFIK_PORTS.ping}` },
      // Only the Funnel container reaches it, over an overlay shared with Traefik alone; the
      // same upload timeout as websecure, since client uploads arrive here.
      // forwardedHeaders: Traefik deletes the X-Forwarded-* of a peer outside trustedIPs
      // (traefik/traefik v3.7.9 pkg/middlewares/forwardedheaders/forwarded_header.go ServeHTTP), and
      // every client's peer here is tailscaled, which sets X-Forwarded-For to the Funnel client's
      // address after Go's ReverseProxy dropped any client-sent one (tailscale/tailscale v1.102.3
      // ipn/ipnlocal/serve.go addProxyForwardedHeaders; go src/net/http/httputil/reverseproxy.go,
      // Rewrite). Trusting exactly the Funnel network keeps that address for Dendrite's rate limits.
      ...(i.funnel
        ? {
            [FUNNEL_ENTRYPOINT]: {
              address: `:${TRAEFIK_PORTS.funnel}`,
              forwardedHeaders: { trustedIPs: nonEmpty(i.funnel.trustedIPs, "funnel trustedIPs") },
              http: { middlewares: [SECURITY_HEADERS] },
              transport: { respondingTimeouts: { readTimeout: `${uploadReadTimeoutSeconds(i.maxUploadMb)}s`, writeTimeout: "0s", idleTimeout: "180s" } },
            },
          }
        : {}),
    },
    providers: {
      swarm: { endpoint: i.socketProxyEndpoint, exposedByDefault: false, network: i.edgeNetwork, refreshSeconds: 15 },
      file: { filename: TRAEFIK_DYNAMIC_PATH, watch: false },
    },
  };
  if (i.dashboard) config.api = { dashboard: true, insecure: false };
  if (i.acme) {
    const challenge = i.acme.dnsTokenFile
      ? { dnsChallenge: { provider: "cloudflare", resolvers: ["1.1.1.1:53", "1.0.0.1:53"] } }
      : { httpChallenge: { entryPoint: "web" } };
    config.certificatesResolvers = {
      [CERT_RESOLVER]: { acme: { email: i.acme.email, storage: `${ACME_STORAGE_DIR}/acme.json`, caServer: ACME_SERVERS[i.acme.ca], keyType: "EC256", ...challenge } },
    };
  }
  return stringify(config, { aliasDuplicateObjects: false });
}

// TLS 1.2 minimum; TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are not configurable).
// Keys: traefik/traefik v3.7 pkg/tls/tls.go Options.
const TLS_BASELINE = {
  minVersion: "VersionTLS12",
  cipherSuites: [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
  ],
  curvePreferences: ["X25519", "CurveP256"],
};

/**
 * The dashboard, reached by tailnet IP (no SNI) or MagicDNS name (no certificate of ours).
 * An HTTPS router cannot give such a client its own TLS options: a client without SNI, or a router
 * without a Host rule, always gets the `default` options (traefik/traefik v3.7
 * pkg/server/router/tcp/manager.go buildEntryPointHandler: Host(*) fallback to defaultTLSConf;
 * router.go SetHTTPSForwarder), and with sniStrict pkg/tls/tlsmanager.go Get() then has no
 * certificate and aborts the handshake. A TCP router with HostSNI(`*`) does take its own options
 * (manager.go addTCPHandlers; pkg/muxer/tcp/matcher.go: HostSNI(`*`) also matches an empty SNI), so it
 * ends TLS with non-strict `admin` options (Traefik's self-signed default certificate) and passes the
 * plain request to a loopback-only entrypoint where the dashboard router and basic auth live.
 * The VPN allowlist sits on the TCP router: behind it every client is 127.0.0.1.
 * Keys: pkg/config/dynamic/tcp_config.go TCPRouter, RouterTCPTLSConfig, TCPServersLoadBalancer, TCPServer;
 * tcp_middlewares.go TCPIPAllowList.
 */
function adminConfig(d: NonNullable<TraefikDynamicInput["dashboard"]>) {
  return {
    tcp: {
      routers: {
        "admin-tls": {
          entryPoints: ["admin"],
          rule: "HostSNI(`*`)",
          middlewares: ["admin-only"],
          service: "admin-loopback",
          tls: { options: ADMIN_TLS_OPTIONS },
        },
      },
      middlewares: { "admin-only": { ipAllowList: { sourceRange: d.allowedSourceRanges } } },
      services: { "admin-loopback": { loadBalancer: { servers: [{ address: `127.0.0.1:${TRAEFIK_PORTS.adminLoopback}` }] } } },
    },
    httpMiddlewares: { "dashboard-auth": { basicAuth: { usersFile: d.usersFile, removeHeader: true } } },
    httpRouters: {
      dashboard: {
        entryPoints: ["admin-loopback"],
        rule: "PathPrefix(`/api`) || PathPrefix(`/dashboard`)",
        service: "api@internal",
        middlewares: ["dashboard-auth"],
      },
    },
  };
}

export function renderTraefikDynamic(i: TraefikDynamicInput): string {
  const admin = i.dashboard && adminConfig(i.dashboard);
  const config: Record<string, unknown> = {
    tls: {
      options: {
        default: { ...TLS_BASELINE, sniStrict: i.sniStrict },
        ...(admin ? { [ADMIN_TLS_OPTIONS]: { ...TLS_BASELINE, sniStrict: false } } : {}),
      },
    },
    http: {
      middlewares: {
        // On every entrypoint, so on every host Traefik answers: the Matrix host, and the server name
        // (apex) where it serves /.well-known/matrix or, with SRV delegation, federation. HSTS for the
        // answering host only: includeSubDomains on the apex would force HTTPS on every name of the
        // operator's domain for a year (RFC 6797 section 6.1.2), and no name under the Matrix host is ours.
        "security-headers": {
          headers: {
            stsSeconds: 31536000,
            contentTypeNosniff: true,
            frameDeny: true,
            referrerPolicy: "no-referrer",
            customResponseHeaders: { "X-Powered-By": "", Server: "" },
          },
        },
        // Web clients on other origins read /.well-known/matrix/client (Matrix spec).
        "matrix-well-known-cors": { headers: { customResponseHeaders: { "Access-Control-Allow-Origin": "*" } } },
        ...(admin ? admin.httpMiddlewares : {}),
      },
      ...(admin ? { routers: admin.httpRouters } : {}),
    },
    ...(admin ? { tcp: admin.tcp } : {}),
  };
  return stringify(config, { aliasDuplicateObjects: false });
}

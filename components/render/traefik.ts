import { stringify } from "yaml";

/** Ports Traefik listens on inside its container: unprivileged, so it needs no capability. */
export const TRAEFIK_PORTS = { web: 8080, websecure: 8443, federation: 8448, admin: 9443, ping: 8082 } as const;
export const TRAEFIK_STATIC_PATH = "/etc/traefik/traefik.yml";
export const TRAEFIK_DYNAMIC_PATH = "/etc/traefik/dynamic.yml";
export const ACME_STORAGE_DIR = "/acme";
export const CERT_RESOLVER = "le";
export const SECURITY_HEADERS = "security-headers@file";

export const ACME_SERVERS = {
  letsencrypt: "https://acme-v02.api.letsencrypt.org/directory",
  "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
} as const;

export interface TraefikStaticInput {
  /** Published HTTPS port the web entrypoint redirects to. */
  publishedHttpsPort: number;
  socketProxyEndpoint: string;
  /** Overlay network Traefik reaches routed services on. */
  edgeNetwork: string;
  dashboard: boolean;
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

export function renderTraefikStatic(i: TraefikStaticInput): string {
  const tls = i.acme ? { certResolver: CERT_RESOLVER } : {};
  const secureEntryPoint = (port: number) => ({
    address: `:${port}`,
    http: { tls, middlewares: [SECURITY_HEADERS] },
    // Slowloris and idle-connection exhaustion.
    transport: { respondingTimeouts: { readTimeout: "60s", writeTimeout: "0s", idleTimeout: "180s" } },
  });
  const config: Record<string, unknown> = {
    global: { checkNewVersion: false, sendAnonymousUsage: false },
    log: { level: "INFO", format: "json" },
    // Audit trail without credentials: headers are dropped except the user agent.
    accessLog: { format: "json", fields: { defaultMode: "keep", headers: { defaultMode: "drop", names: { "User-Agent": "keep" } } } },
    ping: { entryPoint: "ping" },
    entryPoints: {
      web: {
        address: `:${TRAEFIK_PORTS.web}`,
        http: { redirections: { entryPoint: { to: `:${i.publishedHttpsPort}`, scheme: "https", permanent: true } } },
      },
      websecure: { ...secureEntryPoint(TRAEFIK_PORTS.websecure), asDefault: true },
      federation: secureEntryPoint(TRAEFIK_PORTS.federation),
      ...(i.dashboard ? { admin: { address: `:${TRAEFIK_PORTS.admin}`, http: { tls: {} } } } : {}),
      ping: { address: `:${TRAEFIK_PORTS.ping}` },
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

export function renderTraefikDynamic(i: TraefikDynamicInput): string {
  const config: Record<string, unknown> = {
    tls: {
      options: {
        default: {
          minVersion: "VersionTLS12",
          sniStrict: i.sniStrict,
          // TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are not configurable.
          cipherSuites: [
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
          ],
          curvePreferences: ["X25519", "CurveP256"],
        },
      },
    },
    http: {
      middlewares: {
        "security-headers": {
          headers: {
            stsSeconds: 31536000,
            stsIncludeSubdomains: true,
            contentTypeNosniff: true,
            frameDeny: true,
            referrerPolicy: "no-referrer",
            customResponseHeaders: { "X-Powered-By": "", Server: "" },
          },
        },
        // Web clients on other origins read /.well-known/matrix/client (Matrix spec).
        "matrix-well-known-cors": { headers: { customResponseHeaders: { "Access-Control-Allow-Origin": "*" } } },
        ...(i.dashboard
          ? {
              "admin-only": { ipAllowList: { sourceRange: i.dashboard.allowedSourceRanges } },
              "dashboard-auth": { basicAuth: { usersFile: i.dashboard.usersFile, removeHeader: true } },
            }
          : {}),
      },
      ...(i.dashboard
        ? {
            routers: {
              dashboard: {
                entryPoints: ["admin"],
                rule: "PathPrefix(`/api`) || PathPrefix(`/dashboard`)",
                service: "api@internal",
                middlewares: ["admin-only", "dashboard-auth"],
                tls: {},
              },
            },
          }
        : {}),
    },
  };
  return stringify(config, { aliasDuplicateObjects: false });
}

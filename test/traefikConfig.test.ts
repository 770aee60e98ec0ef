import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import {
  ACME_SERVERS,
  FEDERATION_READ_TIMEOUT_SECONDS,
  renderTraefikDynamic,
  renderTraefikStatic,
  SLOW_UPLINK_BITS_PER_SECOND,
  uploadReadTimeoutSeconds,
} from "../components/render/traefik";

const base = { publishedHttpsPort: 443, socketProxyEndpoint: "tcp://socket-proxy:2375", edgeNetwork: "edge", maxUploadMb: 50 };

test("ACME: HTTP-01 on the web entrypoint by default, state on the persistent volume", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: false, acme: { ca: "letsencrypt", email: "ops@example.org" } }));
  const acme = c.certificatesResolvers.le.acme;
  assert.deepEqual(acme.httpChallenge, { entryPoint: "web" });
  assert.equal(acme.dnsChallenge, undefined);
  assert.equal(acme.storage, "/acme/acme.json");
  assert.equal(acme.caServer, ACME_SERVERS.letsencrypt);
  assert.deepEqual(c.entryPoints.websecure.http.tls, { certResolver: "le" });
  assert.deepEqual(c.entryPoints.federation.http.tls, { certResolver: "le" });
});

test("ACME: Cloudflare DNS-01 when a token file is given (the token itself never appears)", () => {
  const text = renderTraefikStatic({ ...base, dashboard: false, acme: { ca: "letsencrypt-staging", email: "ops@example.org", dnsTokenFile: "/run/secrets/cf" } });
  const acme = parse(text).certificatesResolvers.le.acme;
  assert.equal(acme.dnsChallenge.provider, "cloudflare");
  assert.equal(acme.httpChallenge, undefined);
  assert.equal(acme.caServer, ACME_SERVERS["letsencrypt-staging"]);
});

test("dashboard: never insecure; TLS ended by a TCP router with its own non-strict options, for clients without SNI", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: true }));
  assert.deepEqual(c.api, { dashboard: true, insecure: false });
  // No HTTP TLS on the admin entrypoint: an HTTPS router there would get the strict default options.
  assert.deepEqual(c.entryPoints.admin, { address: ":9443" });
  assert.deepEqual(c.entryPoints["admin-loopback"], { address: "127.0.0.1:9444" });
  const d = parse(renderTraefikDynamic({ sniStrict: true, dashboard: { usersFile: "/run/secrets/users", allowedSourceRanges: ["100.64.0.0/10"] } }));
  assert.equal(d.tls.options.default.sniStrict, true);
  assert.equal(d.tls.options.admin.sniStrict, false);
  assert.equal(d.tls.options.admin.minVersion, "VersionTLS12");
  assert.deepEqual(d.tls.options.admin.cipherSuites, d.tls.options.default.cipherSuites);
  const tcp = d.tcp.routers["admin-tls"];
  assert.deepEqual(tcp.entryPoints, ["admin"]);
  // HostSNI(`*`) is the one rule that matches a ClientHello without SNI (traefik pkg/muxer/tcp/matcher.go).
  assert.equal(tcp.rule, "HostSNI(`*`)");
  assert.deepEqual(tcp.tls, { options: "admin" });
  assert.deepEqual(tcp.middlewares, ["admin-only"]);
  assert.deepEqual(d.tcp.middlewares["admin-only"].ipAllowList.sourceRange, ["100.64.0.0/10"]);
  assert.deepEqual(d.tcp.services[tcp.service].loadBalancer.servers, [{ address: "127.0.0.1:9444" }]);
  const router = d.http.routers.dashboard;
  assert.deepEqual(router.entryPoints, ["admin-loopback"]);
  assert.equal(router.service, "api@internal");
  assert.equal(router.tls, undefined);
  assert.deepEqual(router.middlewares, ["dashboard-auth"]);
  assert.equal(d.http.middlewares["dashboard-auth"].basicAuth.usersFile, "/run/secrets/users");
  assert.equal(d.http.middlewares["admin-only"], undefined, "behind the loopback hop every client is 127.0.0.1");
  assert.doesNotMatch(JSON.stringify(c.entryPoints.websecure), /admin|api/);
});

test("no dashboard: no admin entrypoint, no TCP router, no admin TLS options", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: false }));
  assert.equal(c.entryPoints.admin, undefined);
  assert.equal(c.entryPoints["admin-loopback"], undefined);
  const d = parse(renderTraefikDynamic({ sniStrict: true }));
  assert.equal(d.tcp, undefined);
  assert.deepEqual(Object.keys(d.tls.options), ["default"]);
});

test("upload read timeout: the largest upload fits through a 2 Mbit/s uplink, plus 60 s headroom", () => {
  assert.equal(SLOW_UPLINK_BITS_PER_SECOND, 2_000_000);
  // 50 MiB = 419,430,400 bits; at 2 Mbit/s 209.7 s, rounded up to 210, plus 60.
  assert.equal(uploadReadTimeoutSeconds(50), 270);
  assert.equal(uploadReadTimeoutSeconds(1), 65);
  assert.equal(uploadReadTimeoutSeconds(2048), 8590 + 60);
  for (const mb of [1, 10, 50, 100, 2048]) {
    const seconds = uploadReadTimeoutSeconds(mb);
    assert.ok((seconds - 60) * SLOW_UPLINK_BITS_PER_SECOND >= mb * 1024 * 1024 * 8, `${mb} MiB does not fit in ${seconds}s`);
  }
});

test("upload read timeout: rendered on the client entrypoint; federation keeps its short bound", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: false, maxUploadMb: 100 }));
  assert.equal(c.entryPoints.websecure.transport.respondingTimeouts.readTimeout, `${uploadReadTimeoutSeconds(100)}s`);
  assert.equal(c.entryPoints.websecure.transport.respondingTimeouts.readTimeout, "480s");
  assert.equal(c.entryPoints.federation.transport.respondingTimeouts.readTimeout, `${FEDERATION_READ_TIMEOUT_SECONDS}s`);
});

test("access log: no query string (?access_token=), no header but the user agent", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: false }));
  assert.deepEqual(c.accessLog.fields.queryParameters, { defaultMode: "drop" });
  assert.equal(c.accessLog.fields.headers.defaultMode, "drop");
  assert.deepEqual(c.accessLog.fields.headers.names, { "User-Agent": "keep" });
  assert.equal(c.accessLog.format, "json");
  // Traefik's AccessLogFields.KeepHeader: names[canonical header] if present, else headers.defaultMode
  // (pkg/observability/types/logs.go); it applies to request, origin and downstream headers alike.
  const mode = (header: string): string => c.accessLog.fields.headers.names[header] ?? c.accessLog.fields.headers.defaultMode;
  for (const h of ["Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization", "X-Forwarded-For", "Referer"]) assert.equal(mode(h), "drop", h);
  assert.equal(mode("User-Agent"), "keep");
});

test("rendered YAML has no anchors or aliases (each value stands where it is used)", () => {
  const text = renderTraefikStatic({ ...base, dashboard: true, acme: { ca: "letsencrypt", email: "ops@example.org" } });
  assert.doesNotMatch(text, /[&*]a\d/);
});

// Every key Traefik is given must be one v3.7 knows: an unknown static key stops Traefik at start,
// an unknown dynamic key or label is dropped with no more than a log line. Shapes copied from the
// yaml tags of traefik/traefik v3.7.9 (`*` = a name of ours, `true` = a value); file and struct named per key.
type Shape = { [key: string]: Shape } | true;
const TLS_OPTIONS: Shape = { minVersion: true, cipherSuites: true, curvePreferences: true, sniStrict: true }; // pkg/tls/tls.go Options
const ROUTER_TLS: Shape = { options: true, certResolver: true, domains: { main: true, sans: true } }; // dynamic/http_config.go RouterTLSConfig, pkg/types/domains.go Domain
const STATIC_SHAPE: Shape = {
  // pkg/config/static/static_config.go Configuration, Global, API
  global: { checkNewVersion: true, sendAnonymousUsage: true },
  api: { dashboard: true, insecure: true },
  log: { level: true, format: true }, // pkg/observability/types/logs.go TraefikLog
  // pkg/observability/types/logs.go AccessLog, AccessLogFields, FieldHeaders, FieldQueryParameters
  accessLog: { format: true, fields: { defaultMode: true, names: { "*": true }, headers: { defaultMode: true, names: { "*": true } }, queryParameters: { defaultMode: true } } },
  ping: { entryPoint: true }, // pkg/ping/ping.go Handler
  entryPoints: {
    // pkg/config/static/entrypoints.go EntryPoint, HTTPConfig, Redirections, RedirectEntryPoint, TLSConfig, EntryPointsTransport; static_config.go RespondingTimeouts
    "*": {
      address: true,
      asDefault: true,
      http: { redirections: { entryPoint: { to: true, scheme: true, permanent: true } }, middlewares: true, tls: { options: true, certResolver: true, domains: { main: true, sans: true } } },
      transport: { respondingTimeouts: { readTimeout: true, writeTimeout: true, idleTimeout: true } },
      forwardedHeaders: { insecure: true, trustedIPs: true, connection: true, notAppendXForwardedFor: true }, // entrypoints.go ForwardedHeaders
    },
  },
  providers: {
    // pkg/provider/docker/pswarm.go SwarmProvider (inline shared.go Shared, ClientConfig); pkg/provider/file/file.go Provider
    swarm: { endpoint: true, exposedByDefault: true, network: true, refreshSeconds: true },
    file: { filename: true, watch: true },
  },
  // static_config.go CertificateResolver; pkg/provider/acme/provider.go Configuration, DNSChallenge, HTTPChallenge
  certificatesResolvers: { "*": { acme: { email: true, storage: true, caServer: true, keyType: true, dnsChallenge: { provider: true, resolvers: true }, httpChallenge: { entryPoint: true } } } },
};
const DYNAMIC_SHAPE: Shape = {
  // pkg/config/dynamic/config.go Configuration, TLSConfiguration
  tls: { options: { "*": TLS_OPTIONS } },
  http: {
    // dynamic/http_config.go HTTPConfiguration, Router, Service, ServersLoadBalancer
    routers: { "*": { entryPoints: true, rule: true, service: true, middlewares: true, priority: true, tls: ROUTER_TLS } },
    // labels only: `server` is the label-slice-as-struct name of ServersLoadBalancer.Servers
    services: { "*": { loadBalancer: { server: { port: true } } } },
    middlewares: {
      // dynamic/middlewares.go Middleware, Headers, BasicAuth, ForwardAuth
      "*": {
        headers: { stsSeconds: true, stsIncludeSubdomains: true, contentTypeNosniff: true, frameDeny: true, referrerPolicy: true, customResponseHeaders: { "*": true } },
        basicAuth: { usersFile: true, removeHeader: true },
        forwardAuth: { address: true, trustForwardHeader: true },
      },
    },
  },
  tcp: {
    // dynamic/tcp_config.go TCPConfiguration, TCPRouter, RouterTCPTLSConfig, TCPService, TCPServersLoadBalancer, TCPServer; tcp_middlewares.go TCPIPAllowList
    routers: { "*": { entryPoints: true, rule: true, service: true, middlewares: true, tls: { options: true } } },
    middlewares: { "*": { ipAllowList: { sourceRange: true } } },
    services: { "*": { loadBalancer: { servers: { address: true } } } },
  },
};

/** Keys of `value` the shape does not know; label keys are matched case-insensitively, as Traefik parses labels. */
function unknownKeys(value: unknown, shape: Shape, path = "", ignoreCase = false): string[] {
  if (shape === true || value === null || typeof value !== "object") return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownKeys(v, shape, `${path}[${i}]`, ignoreCase));
  return Object.entries(value).flatMap(([key, v]) => {
    const known = Object.keys(shape).find((k) => (ignoreCase ? k.toLowerCase() === key.toLowerCase() : k === key));
    const sub = known !== undefined ? shape[known] : shape["*"];
    return sub === undefined ? [`${path}.${key}`] : unknownKeys(v, sub, `${path}.${key}`, ignoreCase);
  });
}

/** Swarm labels as the dynamic configuration they stand for (`a.b[0].c` -> {a:{b:[{c}]}}). */
function labelsAsConfig(labels: Record<string, string>): Record<string, unknown> {
  const root: Record<string, any> = {};
  for (const [label, value] of Object.entries(labels)) {
    if (label === "traefik.enable" || label === "traefik.swarm.network") continue; // provider labels (pkg/provider/docker/config.go)
    const parts = label.replace(/^traefik\./, "").split(".");
    let cur = root;
    parts.forEach((part, i) => {
      const m = /^(.+)\[(\d+)\]$/.exec(part);
      const key = m ? m[1]! : part;
      const last = i === parts.length - 1;
      if (m) {
        cur[key] ??= [];
        cur[key][Number(m[2])] ??= {};
        cur = cur[key][Number(m[2])];
        if (last) throw new Error(`indexed leaf ${label}`);
      } else if (last) {
        // `tls=true` enables a section that deeper labels also fill (label:"allowEmpty" in the structs).
        if (typeof cur[key] !== "object") cur[key] = value;
      } else {
        if (typeof cur[key] !== "object") cur[key] = {};
        cur = cur[key];
      }
    });
  }
  return root;
}

test("every rendered static key is one Traefik v3.7 knows", () => {
  const variants = [
    renderTraefikStatic({ ...base, dashboard: true, acme: { ca: "letsencrypt", email: "ops@example.org", dnsTokenFile: "/run/secrets/cf" } }),
    renderTraefikStatic({ ...base, dashboard: false, acme: { ca: "letsencrypt", email: "ops@example.org" } }),
    renderTraefikStatic({ ...base, dashboard: false }),
    renderTraefikStatic({ ...base, dashboard: true, funnel: { trustedIPs: ["10.20.255.0/24"] } }),
  ];
  for (const text of variants) assert.deepEqual(unknownKeys(parse(text), STATIC_SHAPE), []);
  // The check can fail: a misspelt key is caught.
  assert.deepEqual(unknownKeys({ accessLog: { fields: { queryParameter: { defaultMode: "drop" } } } }, STATIC_SHAPE), [".accessLog.fields.queryParameter"]);
});

test("every rendered dynamic key, and every Dendrite router label, is one Traefik v3.7 knows", async () => {
  const { dendriteRouterLabels } = await import("../components/render/dendriteRoutes");
  for (const d of [renderTraefikDynamic({ sniStrict: true, dashboard: { usersFile: "/u", allowedSourceRanges: ["100.64.0.0/10"] } }), renderTraefikDynamic({ sniStrict: false })]) {
    assert.deepEqual(unknownKeys(parse(d), DYNAMIC_SHAPE), []);
  }
  for (const mode of ["open", "allowlist"] as const) {
    const labels = dendriteRouterLabels({
      service: "dendrite",
      port: 8008,
      edgeNetwork: "edge",
      matrixHost: "matrix.example.org",
      wellKnownHost: "example.org",
      federation: { mode, gateAddress: mode === "allowlist" ? "http://federation-gate:8090/verify" : undefined },
      certResolver: "le",
      federationCertDomain: "example.org",
    });
    const config = labelsAsConfig(labels);
    assert.ok(JSON.stringify(config).includes('"domains":[{"main":"example.org"}]'));
    assert.deepEqual(unknownKeys(config, DYNAMIC_SHAPE, "", true), []);
  }
  assert.deepEqual(unknownKeys(labelsAsConfig({ "traefik.http.routers.x.tls.domain[0].main": "a" }), DYNAMIC_SHAPE, "", true), [".http.routers.x.tls.domain"]);
});

test("funnel: forwarded headers are trusted on the funnel entrypoint from the given range only; an empty range is refused", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: true, funnel: { trustedIPs: ["10.20.255.0/24"] } }));
  assert.deepEqual(c.entryPoints.funnel.forwardedHeaders, { trustedIPs: ["10.20.255.0/24"] });
  for (const [ep, e] of Object.entries(c.entryPoints as Record<string, { forwardedHeaders?: unknown }>)) if (ep !== "funnel") assert.equal(e.forwardedHeaders, undefined, ep);
  assert.equal(parse(renderTraefikStatic({ ...base, dashboard: false })).entryPoints.funnel, undefined);
  assert.throws(() => renderTraefikStatic({ ...base, dashboard: false, funnel: { trustedIPs: [] } }), /funnel trustedIPs is empty/);
});

test("HSTS: a year, for the answering host only (no includeSubDomains: the apex's well-known carries it too)", () => {
  for (const d of [renderTraefikDynamic({ sniStrict: true }), renderTraefikDynamic({ sniStrict: false, dashboard: { usersFile: "/u", allowedSourceRanges: ["100.64.0.0/10"] } })]) {
    const h = parse(d).http.middlewares["security-headers"].headers;
    assert.equal(h.stsSeconds, 31536000);
    assert.notEqual(h.stsIncludeSubdomains, true);
    assert.equal(h.stsPreload, undefined);
  }
});

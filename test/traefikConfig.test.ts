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
});

test("rendered YAML has no anchors or aliases (each value stands where it is used)", () => {
  const text = renderTraefikStatic({ ...base, dashboard: true, acme: { ca: "letsencrypt", email: "ops@example.org" } });
  assert.doesNotMatch(text, /[&*]a\d/);
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { parse } from "yaml";
import { ACME_SERVERS, renderTraefikDynamic, renderTraefikStatic } from "../components/render/traefik";

const base = { publishedHttpsPort: 443, socketProxyEndpoint: "tcp://socket-proxy:2375", edgeNetwork: "edge" };

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

test("dashboard: never insecure, only on the admin entrypoint, behind the VPN allowlist and basic auth", () => {
  const c = parse(renderTraefikStatic({ ...base, dashboard: true }));
  assert.deepEqual(c.api, { dashboard: true, insecure: false });
  const d = parse(renderTraefikDynamic({ sniStrict: true, dashboard: { usersFile: "/run/secrets/users", allowedSourceRanges: ["100.64.0.0/10"] } }));
  const router = d.http.routers.dashboard;
  assert.deepEqual(router.entryPoints, ["admin"]);
  assert.equal(router.service, "api@internal");
  assert.deepEqual(router.middlewares, ["admin-only", "dashboard-auth"]);
  assert.deepEqual(d.http.middlewares["admin-only"].ipAllowList.sourceRange, ["100.64.0.0/10"]);
  assert.equal(d.http.middlewares["dashboard-auth"].basicAuth.usersFile, "/run/secrets/users");
  assert.equal(d.tls.options.default.sniStrict, true);
  assert.doesNotMatch(JSON.stringify(c.entryPoints.websecure), /admin|api/);
});

test("rendered YAML has no anchors or aliases (each value stands where it is used)", () => {
  const text = renderTraefikStatic({ ...base, dashboard: true, acme: { ca: "letsencrypt", email: "ops@example.org" } });
  assert.doesNotMatch(text, /[&*]a\d/);
});

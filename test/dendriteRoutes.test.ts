import assert from "node:assert/strict";
import { test } from "node:test";
import { allowedOriginRegex, dendriteRouterLabels, type DendriteRoutesInput } from "../components/render/dendriteRoutes";

const base: DendriteRoutesInput = {
  service: "dendrite",
  port: 8008,
  edgeNetwork: "edge",
  matrixHost: "matrix.example.org",
  wellKnownHost: "example.org",
  federation: { mode: "open", allowlist: [] },
  certResolver: "le",
};

const rules = (labels: Record<string, string>) =>
  Object.fromEntries(Object.entries(labels).filter(([k]) => k.endsWith(".rule")).map(([k, v]) => [k.split(".")[3], v]));

test("the service is exposed explicitly, on the edge network, with its port", () => {
  const l = dendriteRouterLabels(base);
  assert.equal(l["traefik.enable"], "true");
  assert.equal(l["traefik.swarm.network"], "edge");
  assert.equal(l["traefik.http.services.dendrite.loadbalancer.server.port"], "8008");
});

test("client API and media on websecure; federation on its own entrypoint; admin paths never routed", () => {
  const l = dendriteRouterLabels(base);
  assert.equal(l["traefik.http.routers.dendrite-client.entrypoints"], "websecure");
  assert.equal(l["traefik.http.routers.dendrite-federation.entrypoints"], "federation");
  assert.equal(l["traefik.http.routers.dendrite-client.tls.certresolver"], "le");
  for (const rule of Object.values(rules(l))) {
    assert.doesNotMatch(rule, /_dendrite|_synapse/);
    assert.doesNotMatch(rule, /PathPrefix\(`\/`\)|PathPrefix\(`\/_matrix\/`\)/, `too broad: ${rule}`);
  }
});

test("well-known is served on the server name and the Matrix host, with CORS", () => {
  const l = dendriteRouterLabels(base);
  assert.equal(rules(l)["dendrite-well-known"], "(Host(`matrix.example.org`) || Host(`example.org`)) && PathPrefix(`/.well-known/matrix/`)");
  assert.equal(l["traefik.http.routers.dendrite-well-known.middlewares"], "matrix-well-known-cors@file");
});

test("the public room directory needs an access token Dendrite accepts", () => {
  const l = dendriteRouterLabels(base);
  assert.equal(rules(l)["dendrite-public-rooms"], "Host(`matrix.example.org`) && PathRegexp(`^/_matrix/client/[^/]+/publicRooms`)");
  assert.equal(l["traefik.http.routers.dendrite-public-rooms.middlewares"], "matrix-require-token");
  assert.equal(l["traefik.http.middlewares.matrix-require-token.forwardauth.address"], "http://dendrite:8008/_matrix/client/v3/account/whoami");
  // Above the general client router, whose rule also matches these paths.
  assert.equal(l["traefik.http.routers.dendrite-public-rooms.priority"], "1000");
  assert.ok(new RegExp("^/_matrix/client/[^/]+/publicRooms").test("/_matrix/client/v3/publicRooms"));
});

test("closed federation routes nothing on the federation entrypoint", () => {
  const l = dendriteRouterLabels({ ...base, federation: { mode: "closed", allowlist: [] } });
  assert.ok(!Object.entries(l).some(([k, v]) => k.endsWith(".entrypoints") && v === "federation"));
});

test("allowlist: only requests signed by an allowed origin; server keys stay reachable", () => {
  const l = dendriteRouterLabels({ ...base, federation: { mode: "allowlist", allowlist: ["matrix.org", "friends.example"] } });
  assert.match(rules(l)["dendrite-federation"]!, /HeaderRegexp\(`Authorization`, `\^X-Matrix/);
  assert.equal(rules(l)["dendrite-server-keys"], "Path(`/_matrix/key/v2/server`) || PathPrefix(`/_matrix/key/v2/server/`)");
});

test("the origin regex accepts exactly the allowed origins", () => {
  const re = new RegExp(allowedOriginRegex(["matrix.org", "friends.example"]));
  const sig = 'key="ed25519:a",sig="abc"';
  assert.ok(re.test(`X-Matrix origin="matrix.org",destination="example.org",${sig}`));
  assert.ok(re.test(`X-Matrix origin=matrix.org,${sig}`));
  assert.ok(re.test(`X-Matrix destination="example.org",origin="friends.example",${sig}`));
  assert.ok(re.test(`X-Matrix ${sig},origin="friends.example"`));
  assert.ok(!re.test(`X-Matrix origin="matrix.org.evil.com",${sig}`));
  assert.ok(!re.test(`X-Matrix origin="evilmatrix.org",${sig}`));
  assert.ok(!re.test(`X-Matrix origin="evil.com",destination="matrix.org",${sig}`));
  assert.ok(!re.test(`X-Matrix origin="matrixXorg",${sig}`), "dots are literal");
  assert.ok(!re.test(`Bearer origin="matrix.org"`));
});

test("SRV delegation: every federation router asks ACME for the server name and matches its Host header", () => {
  // Remote servers connect to the SRV target with SNI and Host = the server name (Matrix server-server
  // API, "Resolving server names"), and need a certificate for it.
  for (const federation of [{ mode: "open", allowlist: [] }, { mode: "allowlist", allowlist: ["matrix.org"] }] as const) {
    const l = dendriteRouterLabels({ ...base, wellKnownHost: undefined, federation: { ...federation, allowlist: [...federation.allowlist] }, federationCertDomain: "example.org" });
    const routers = Object.entries(l).filter(([k, v]) => k.endsWith(".entrypoints") && v === "federation").map(([k]) => k.split(".")[3]!);
    assert.ok(routers.length > 0);
    for (const r of routers) {
      assert.equal(l[`traefik.http.routers.${r}.tls.domains[0].main`], "example.org", r);
      assert.equal(l[`traefik.http.routers.${r}.tls.certresolver`], "le", r);
      const rule = l[`traefik.http.routers.${r}.rule`]!;
      // A router with no Host matcher takes any Host, the server name included.
      assert.ok(!/Host(Regexp)?\(/.test(rule) || rule.includes("Host(`example.org`)"), `${r} would not match Host example.org: ${rule}`);
    }
  }
  const clientRouters = dendriteRouterLabels({ ...base, federationCertDomain: "example.org" });
  assert.equal(clientRouters["traefik.http.routers.dendrite-client.tls.domains[0].main"], undefined, "the client API keeps its Host-derived certificate");
});

test("without SRV delegation no router names TLS domains (certificates follow the Host rules)", () => {
  const l = dendriteRouterLabels(base);
  assert.ok(!Object.keys(l).some((k) => k.includes(".tls.domains")));
});

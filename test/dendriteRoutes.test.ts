import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { dendriteRouterLabels, FEDERATION_ALLOWLIST, REQUIRE_TOKEN } from "../components/render/dendriteRoutes";
import { renderFederationGate } from "../components/render/federationGate";
import { DENDRITE_ROUTES, ROUTE_VARIANTS, samplePaths, SAMPLE_ROUTES } from "./support/dendriteRouteTable";
import { route, routersFromLabels, type Router } from "./support/traefikRules";

const base = SAMPLE_ROUTES;

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
  assert.equal(rules(l)["dendrite-public-rooms"], "Host(`matrix.example.org`) && PathRegexp(`^/_matrix/client/[^/]+/publicRooms`) && !Method(`OPTIONS`)");
  assert.equal(l["traefik.http.routers.dendrite-public-rooms.middlewares"], "matrix-require-token");
  assert.equal(l["traefik.http.middlewares.matrix-require-token.forwardauth.address"], "http://dendrite:8008/_matrix/client/v3/account/whoami");
  // The token travels in the Authorization header, which forwardAuth copies to whoami; query-string
  // tokens are refused (deprecated in spec v1.11, removed in v1.20: see the README).
  assert.equal(l["traefik.http.middlewares.matrix-require-token.forwardauth.authRequestHeaders"], undefined);
  assert.equal(l["traefik.http.middlewares.matrix-require-token.forwardauth.trustForwardHeader"], "false");
  // Above the general client router, whose rule also matches these paths.
  assert.equal(l["traefik.http.routers.dendrite-public-rooms.priority"], "1000");
  assert.ok(new RegExp("^/_matrix/client/[^/]+/publicRooms").test("/_matrix/client/v3/publicRooms"));
});

test("closed federation routes nothing on the federation entrypoint", () => {
  const l = dendriteRouterLabels({ ...base, federation: { mode: "closed" } });
  assert.ok(!Object.entries(l).some(([k, v]) => k.endsWith(".entrypoints") && v === "federation"));
});

test("allowlist: every federation request goes through the gate; server keys stay reachable", () => {
  const l = dendriteRouterLabels({ ...base, federation: { mode: "allowlist", gateAddress: "http://federation-gate:8090/verify" } });
  assert.equal(rules(l)["dendrite-federation"], "PathPrefix(`/_matrix/federation/`) || PathPrefix(`/_matrix/key/`)");
  assert.equal(l["traefik.http.routers.dendrite-federation.middlewares"], "matrix-federation-allowlist");
  assert.equal(l["traefik.http.middlewares.matrix-federation-allowlist.forwardauth.address"], "http://federation-gate:8090/verify");
  // Client-sent X-Forwarded-* never reach the gate as if Traefik had set them.
  assert.equal(l["traefik.http.middlewares.matrix-federation-allowlist.forwardauth.trustForwardHeader"], "false");
  // No header regex decides anything any more: HeaderRegexp passes when ANY value matches anywhere.
  for (const rule of Object.values(rules(l))) assert.doesNotMatch(rule, /Header/);
  assert.equal(rules(l)["dendrite-server-keys"], "Path(`/_matrix/key/v2/server`) || PathPrefix(`/_matrix/key/v2/server/`)");
  assert.equal(l["traefik.http.routers.dendrite-server-keys.middlewares"], undefined);
  // Above the federation router, whose rule also matches the key path.
  assert.equal(l["traefik.http.routers.dendrite-server-keys.priority"], "1000");
  assert.equal(l["traefik.http.routers.dendrite-federation.priority"], undefined);
});

test("allowlist without a gate is a programming error, not an open router", () => {
  assert.throws(() => dendriteRouterLabels({ ...base, federation: { mode: "allowlist" } }), /no federation gate address/);
});

test("open and closed federation have no gate middleware", () => {
  for (const mode of ["open", "closed"] as const) {
    const l = dendriteRouterLabels({ ...base, federation: { mode } });
    assert.ok(!Object.keys(l).some((k) => k.includes("matrix-federation-allowlist")), mode);
  }
});

test("SRV delegation: every federation router asks ACME for the server name and matches its Host header", () => {
  // Remote servers connect to the SRV target with SNI and Host = the server name (Matrix server-server
  // API, "Resolving server names"), and need a certificate for it.
  for (const federation of [{ mode: "open" }, { mode: "allowlist", gateAddress: "http://federation-gate:8090/verify" }] as const) {
    const l = dendriteRouterLabels({ ...base, wellKnownHost: undefined, federation: { ...federation }, federationCertDomain: "example.org" });
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

// Dendrite's own route table (test/support/dendriteRouteTable.ts, from element-hq/dendrite v0.15.2),
// routed through Traefik's rule semantics (test/support/traefikRules.ts) over the rendered labels.
const variants = ROUTE_VARIANTS;
const entryPointsOf = (routers: Router[]) => [...new Set(routers.flatMap((r) => r.entryPoints))];

test("no Dendrite route that fetches remote media answers without an access token, on any entrypoint or host", () => {
  const fetching = DENDRITE_ROUTES.filter((r) => r.remoteFetch && r.auth === "none");
  assert.equal(fetching.length, 3, "download (two forms) and thumbnail");
  for (const [name, input] of variants) {
    const routers = routersFromLabels(dendriteRouterLabels(input));
    for (const entryPoint of entryPointsOf(routers)) {
      for (const host of [input.matrixHost, "example.org", "anything.example"]) {
        for (const r of fetching) {
          for (const path of samplePaths(r, "remote.example")) {
            for (const method of r.methods) {
              const routed = route(routers, {}, { entryPoint, host, path, method });
              assert.ok(!routed || routed.middlewares.includes(REQUIRE_TOKEN), `${name}: ${method} ${host}${path} on ${entryPoint} reaches ${r.handler} through ${routed?.router} with no token`);
            }
          }
        }
      }
    }
  }
});

test("what clients and other servers need still reaches Dendrite, with no forwardAuth in the way of a CORS preflight", () => {
  for (const [name, input] of variants) {
    const labels = dendriteRouterLabels(input);
    const routers = routersFromLabels(labels);
    const clientEp = input.funnelEntryPoint ?? "websecure";
    const fedEp = input.funnelEntryPoint ?? "federation";
    // Authenticated media (MSC3916) and the two legacy paths Dendrite authenticates itself.
    for (const r of DENDRITE_ROUTES.filter((x) => x.auth === "token")) {
      for (const path of samplePaths(r, "remote.example")) {
        for (const method of r.methods) {
          const routed = route(routers, {}, { entryPoint: clientEp, host: input.matrixHost, path, method });
          assert.ok(routed, `${name}: ${method} ${path} is not routed`);
          assert.deepEqual(routed.middlewares, [], `${name}: ${method} ${path} goes through ${routed.middlewares.join(",")}`);
        }
      }
    }
    // The signed federation media endpoints other servers call: through the gate with an allowlist.
    for (const r of DENDRITE_ROUTES.filter((x) => x.template.startsWith("/_matrix/federation/v1/media/"))) {
      for (const path of samplePaths(r, "remote.example")) {
        const routed = route(routers, {}, { entryPoint: fedEp, host: input.matrixHost, path, method: "GET" });
        if (input.federation.mode === "closed") assert.equal(routed, undefined, `${name}: ${path}`);
        else assert.deepEqual(routed?.middlewares, input.federation.mode === "allowlist" ? [FEDERATION_ALLOWLIST] : [], `${name}: ${path}`);
      }
    }
  }
});

test("legacy unauthenticated media with a valid token still works (only the anonymous request is refused)", () => {
  const routers = routersFromLabels(dendriteRouterLabels(base));
  const routed = route(routers, {}, { entryPoint: "websecure", host: base.matrixHost, path: "/_matrix/media/v3/download/remote.example/aBcD1234", method: "GET" });
  assert.deepEqual(routed, { router: "dendrite-media-token", middlewares: [REQUIRE_TOKEN] });
  // The same middleware as the room directory: forwardAuth to Dendrite's whoami, which answers 200 only for a valid token.
  const labels = dendriteRouterLabels(base);
  assert.equal(labels[`traefik.http.middlewares.${REQUIRE_TOKEN}.forwardauth.address`], "http://dendrite:8008/_matrix/client/v3/account/whoami");
});

test("the federation gate lets through unsigned exactly Dendrite's unsigned federation GET routes, but the room directory", () => {
  // The gate file as the renderer delivers it (a module: it serves only when run as the main program).
  const file = path.join(mkdtempSync(path.join(tmpdir(), "hm-gate-")), "gate.js");
  writeFileSync(file, renderFederationGate({ allowedOrigins: ["friend.org"], port: 8090 }));
  const gate = require(file) as { UNSIGNED_GET: string[] };
  const unsignedGet = DENDRITE_ROUTES.filter((r) => r.template.startsWith("/_matrix/federation/") && r.auth === "none" && r.methods.includes("GET") && !r.template.includes("{"));
  // publicRooms: Dendrite serves the room directory unsigned, but this deployment hides it from anyone
  // without a token (the public-rooms router), so over federation it keeps needing an allowed origin.
  assert.deepEqual(
    unsignedGet.map((r) => r.template).filter((t) => t !== "/_matrix/federation/v1/publicRooms").sort(),
    [...gate.UNSIGNED_GET].sort(),
  );
  assert.deepEqual([...gate.UNSIGNED_GET].sort(), ["/_matrix/federation/v1/openid/userinfo", "/_matrix/federation/v1/version"]);
});

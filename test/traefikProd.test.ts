import assert from "node:assert/strict";
import { before, test } from "node:test";
import { parse } from "yaml";
import { planStack, type Plan } from "../plan/plan";
import { named, plannedFile, type Inputs } from "./support/planned";

// The real program, prod stack (SRV delegation, dashboard on), under mocks: what Traefik is given.
let plan: Plan;
before(async () => {
  plan = await planStack("prod");
  assert.equal(plan.error, undefined, String(plan.error));
});

const file = (path: string): any => parse(plannedFile(plan, path));
const labels = (name: string): Record<string, string> =>
  Object.fromEntries(((named(plan, name).inputs as Inputs).labels as { label: string; value: string }[]).map((l) => [l.label, l.value]));

test("prod SRV delegation: the federation router requests a certificate for the server name, by DNS-01", () => {
  const l = labels("dendrite-service");
  assert.equal(l["traefik.http.routers.dendrite-federation.entrypoints"], "federation");
  assert.equal(l["traefik.http.routers.dendrite-federation.tls.domains[0].main"], "example.org");
  assert.equal(l["traefik.http.routers.dendrite-federation.tls.certresolver"], "le");
  const acme = file("traefik-static/traefik.yml").certificatesResolvers.le.acme;
  assert.equal(acme.dnsChallenge.provider, "cloudflare");
  assert.equal(acme.httpChallenge, undefined);
  // The token reaches Traefik as a Swarm secret file, never as an environment value.
  const spec = (named(plan, "traefik-service").inputs as Inputs).taskSpec.containerSpec;
  assert.deepEqual(spec.env, { CF_DNS_API_TOKEN_FILE: "/run/secrets/cf-dns-api-token" });
});

test("prod: strict SNI on the public entrypoints, the dashboard behind its own non-strict TLS options on the admin port", () => {
  const d = file("traefik-dynamic/dynamic.yml");
  assert.equal(d.tls.options.default.sniStrict, true);
  assert.equal(d.tls.options.admin.sniStrict, false);
  assert.equal(d.tcp.routers["admin-tls"].tls.options, "admin");
  assert.deepEqual(d.tcp.middlewares["admin-only"].ipAllowList.sourceRange, ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]);
  const s = file("traefik-static/traefik.yml");
  assert.equal(s.entryPoints.admin.address, ":9443");
  assert.equal(s.entryPoints.admin.http, undefined);
  assert.equal(s.entryPoints["admin-loopback"].address, "127.0.0.1:9444");
  const ports = (named(plan, "traefik-service").inputs as Inputs).endpointSpec.ports.map((p: Inputs) => [p.targetPort, p.publishedPort]);
  assert.deepEqual(ports, [[8080, 80], [8443, 443], [8448, 8448], [9443, 9443]], "the loopback entrypoint is never published");
});

test("prod: the client entrypoint waits long enough for a maxUploadMb upload at 2 Mbit/s", () => {
  const s = file("traefik-static/traefik.yml");
  assert.equal(s.entryPoints.websecure.transport.respondingTimeouts.readTimeout, "270s");
  assert.equal(s.entryPoints.federation.transport.respondingTimeouts.readTimeout, "60s");
});

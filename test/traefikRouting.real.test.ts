import assert from "node:assert/strict";
import { before, test } from "node:test";
import { parse } from "yaml";
import { dendriteRouterLabels, REQUIRE_TOKEN } from "../components/render/dendriteRoutes";
import { DENDRITE_ROUTES, ROUTE_VARIANTS, samplePaths } from "./support/dendriteRouteTable";
import { planToDisk, STACKS } from "./support/plan";
import { buildTraefikMuxer, realRoute, TRAEFIK_VERSION, type MuxRequest } from "./support/traefikMuxer";
import { route, routersFromDynamic, routersFromLabels, type Router } from "./support/traefikRules";

// Traefik's own router code (github.com/traefik/traefik/v3 pkg/muxer/http at the deployed version,
// built from the Go module proxy by test/support/traefikMuxer.ts) decides which router answers
// Dendrite's routes, over the labels we render and every stack file's plan.

const built = buildTraefikMuxer();
if (!built.bin && process.env.CI) throw new Error(`Traefik's router harness is required in CI: ${built.error}`);
const skip = built.bin ? false : `Traefik ${TRAEFIK_VERSION}'s router not built: ${built.error}`;

const variants = ROUTE_VARIANTS;

/** A path as sent, and the same path with unreserved characters percent-encoded, as a client may send them. */
function spellings(p: string): string[] {
  const variants = [
    p,
    p.replace("/download/", "/%64ownload/").replace("/thumbnail/", "/%74humbnail/"),
    p.replace("/media/", "/%6Dedia/"),
    p.replace(/\/(r0|v1|v3)\//, "/v%33/"),
    p.replace("remote.example", "remote%2Eexample"),
  ];
  return [...new Set(variants)];
}

interface Case {
  name: string;
  routers: Router[];
  hosts: string[];
}
let cases: Case[] = [];
before(() => {
  if (skip) return;
  cases = variants.map(([name, input]) => ({ name, routers: routersFromLabels(dendriteRouterLabels(input)), hosts: [input.matrixHost, "example.org", `${input.matrixHost.toUpperCase()}:443`, "other.example"] }));
  for (const stack of STACKS) {
    const p = planToDisk(stack);
    const service = p.resources.find((r) => r.name === "dendrite-service")!;
    const labels = Object.fromEntries(((service.inputs as { labels: { label: string; value: string }[] }).labels).map((l) => [l.label, l.value]));
    const matrixHost = new URL(String(p.outputs.matrixUrl)).hostname;
    cases.push({
      name: `stack ${stack}`,
      routers: [...routersFromLabels(labels), ...routersFromDynamic(parse(p.files.get("traefik-dynamic/dynamic.yml")!))],
      hosts: [matrixHost, String(p.outputs.serverName), "other.example"],
    });
  }
});

const entryPoints = (routers: Router[]) => [...new Set(routers.flatMap((r) => r.entryPoints))];

test("Traefik's router sends no request for a remote-fetching media route to Dendrite without the token check", { skip }, () => {
  const fetching = DENDRITE_ROUTES.filter((r) => r.remoteFetch && r.auth === "none");
  let asked = 0;
  for (const c of cases) {
    for (const ep of entryPoints(c.routers)) {
      const routers = c.routers.filter((r) => r.entryPoints.includes(ep));
      const requests: MuxRequest[] = [];
      for (const host of c.hosts) for (const r of fetching) for (const sample of samplePaths(r, "remote.example")) for (const p of spellings(sample)) for (const method of r.methods) requests.push({ host, path: p, method });
      const picked = realRoute(built.bin!, routers, requests);
      asked += requests.length;
      picked.forEach((name, i) => {
        const router = routers.find((r) => r.name === name);
        const q = requests[i]!;
        assert.ok(!router || router.middlewares.includes(REQUIRE_TOKEN), `${c.name}: ${q.method} ${q.host}${q.path} on ${ep} reaches Dendrite through ${name} with no token`);
      });
    }
  }
  assert.ok(asked > 1000, `only ${asked} requests asked`);
});

test("the rule evaluator the other tests use picks what Traefik's router picks, for every Dendrite route", { skip }, () => {
  let compared = 0;
  for (const c of cases) {
    for (const ep of entryPoints(c.routers)) {
      const routers = c.routers.filter((r) => r.entryPoints.includes(ep));
      const requests: MuxRequest[] = [];
      for (const host of c.hosts) {
        for (const r of DENDRITE_ROUTES) {
          for (const sample of samplePaths(r, "remote.example")) for (const p of spellings(sample)) for (const method of r.methods) requests.push({ host, path: p, method });
        }
        for (const p of ["/.well-known/matrix/server", "/.well-known/matrix/client", "/_matrix/client/v3/publicRooms", "/_matrix/client/versions", "/_dendrite/admin/x", "/_synapse/admin/v1/register", "/api/overview", "/dashboard/"]) {
          requests.push({ host, path: p, method: "GET" });
        }
      }
      const picked = realRoute(built.bin!, routers, requests);
      picked.forEach((name, i) => {
        const q = requests[i]!;
        assert.equal(route(routers, {}, { entryPoint: ep, ...q })?.router ?? "", name, `${c.name}: ${q.method} ${q.host}${q.path} on ${ep}`);
        compared++;
      });
    }
  }
  assert.ok(compared > 1000, `only ${compared} requests compared`);
});

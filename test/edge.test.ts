import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { statSync } from "node:fs";
import { parse } from "yaml";
import { DOCKER_SOCKET_GID } from "../components/settings";
import { planStack, type Plan, type PlannedResource } from "../plan/plan";
import { named, plannedFile, type Inputs } from "./support/planned";
import { SOCKET_PROXY_API } from "../components/services/socketProxy";
import { planToDisk, STACKS } from "./support/plan";
import { route, routersFromDynamic, routersFromLabels } from "./support/traefikRules";

// The real program, local stack, under mocks: the edge (socket proxy + Traefik).
let plan: Plan;
before(async () => {
  plan = await planStack("local");
  assert.equal(plan.error, undefined, String(plan.error));
});

const byName = (name: string): PlannedResource => named(plan, name);
const spec = (name: string): Inputs => (byName(name).inputs as Inputs).taskSpec.containerSpec;
const file = (path: string): any => parse(plannedFile(plan, path));

test("the local swarm is initialised idempotently, on loopback, and never left", () => {
  const init = byName("local-init").inputs as Inputs;
  assert.match(init.create, /if \[ "\$state" = "inactive" \]; then\n  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 --default-addr-pool 10.20.0.0\/16/);
  assert.doesNotMatch(init.create, /swarm leave|--force-new-cluster/);
  assert.equal(init.delete, "true");
  const provider = byName("local-docker");
  assert.equal((provider.inputs as Inputs).host, "unix:///var/run/docker.sock");
  assert.deepEqual(provider.options.dependsOn, [byName("local-init").urn]);
});

test("services run on the local swarm's provider", () => {
  const providerUrn = byName("local-docker").urn;
  const dockerResources = plan.resources.filter((x) => x.type.startsWith("docker:index/"));
  assert.ok(dockerResources.length >= 10);
  for (const r of dockerResources) {
    assert.ok(r.provider.startsWith(`${providerUrn}::`), `${r.name} uses ${r.provider}`);
  }
});

test("socket proxy: read-only socket, only the sections Traefik's swarm provider needs, internal network, never published", () => {
  const s = spec("socket-proxy-service");
  const enabled = Object.entries(s.env).filter(([, v]) => v === "1").map(([k]) => k).sort();
  assert.deepEqual(enabled, ["NETWORKS", "NODES", "PING", "SERVICES", "TASKS", "VERSION"]);
  assert.equal(s.env.POST, "0");
  assert.equal(SOCKET_PROXY_API.POST, "0");
  const socket = s.mounts.filter((m: Inputs) => m.type === "bind");
  assert.deepEqual(socket, [{ type: "bind", source: "/var/run/docker.sock", target: "/var/run/docker.sock", readOnly: true }]);
  const service = byName("socket-proxy-service").inputs as Inputs;
  assert.equal(service.endpointSpec, undefined, "the proxy must never be published");
  assert.deepEqual(service.taskSpec.placement.constraints, ["node.role==manager"]);
  const net = byName("socket-proxy-net");
  assert.equal((net.inputs as Inputs).internal, true);
  assert.deepEqual(service.taskSpec.networksAdvanceds.map((n: Inputs) => n.id), [net.id]);
  // Only Traefik shares that network.
  const onNetwork = plan.resources.filter((r) => r.type === "docker:index/service:Service" && (r.inputs as Inputs).taskSpec.networksAdvanceds.some((n: Inputs) => n.id === net.id));
  assert.deepEqual(onNetwork.map((r) => (r.inputs as Inputs).name).sort(), ["socket-proxy", "traefik"]);
});

test("socket proxy on the local target: nobody, in the group of this machine's /var/run/docker.sock", () => {
  let gid = DOCKER_SOCKET_GID; // no local socket (planning without Docker): the droplets' fixed gid
  try {
    gid = statSync("/var/run/docker.sock").gid;
  } catch {
    // no socket here
  }
  assert.equal(spec("socket-proxy-service").user, `65534:${gid}`);
});

test("Traefik never mounts the Docker socket and reads Docker through the proxy", () => {
  const s = spec("traefik-service");
  assert.ok(!(s.mounts ?? []).some((m: Inputs) => String(m.source ?? "").includes("docker.sock")));
  const staticConfig = file("traefik-static/traefik.yml");
  assert.deepEqual(staticConfig.providers.swarm, { endpoint: "tcp://socket-proxy:2375", exposedByDefault: false, network: "edge", refreshSeconds: 15 });
  assert.equal(staticConfig.providers.docker, undefined);
});

test("Traefik entrypoints: HTTP redirects to the published HTTPS port; websecure and federation carry the security headers", () => {
  const c = file("traefik-static/traefik.yml");
  assert.deepEqual(c.entryPoints.web.http.redirections.entryPoint, { to: ":8443", scheme: "https", permanent: true });
  for (const ep of ["websecure", "federation"]) {
    assert.deepEqual(c.entryPoints[ep].http.middlewares, ["security-headers@file"]);
  }
  assert.equal(c.entryPoints.federation.address, ":8448");
  assert.equal(c.api, undefined, "local stack has the dashboard off");
  assert.equal(c.entryPoints.admin, undefined);
  assert.equal(c.certificatesResolvers, undefined, "local uses Traefik's self-signed certificate");
  assert.equal(c.global.sendAnonymousUsage, false);
});

test("TLS options come from the file provider: TLS 1.2 minimum; strict SNI only where a real certificate exists", () => {
  const d = file("traefik-dynamic/dynamic.yml");
  assert.equal(d.tls.options.default.minVersion, "VersionTLS12");
  assert.equal(d.tls.options.default.sniStrict, false);
  const h = d.http.middlewares["security-headers"].headers;
  assert.equal(h.stsSeconds, 31536000);
  assert.equal(h.contentTypeNosniff, true);
  assert.equal(h.frameDeny, true);
  assert.equal(h.referrerPolicy, "no-referrer");
});

test("Traefik: one replica, host-mode ports on unprivileged container ports, not root, configs mounted read-only", () => {
  const service = byName("traefik-service").inputs as Inputs;
  assert.equal(service.mode.replicated.replicas, 1);
  assert.deepEqual(
    service.endpointSpec.ports.map((p: Inputs) => [p.targetPort, p.publishedPort, p.publishMode]),
    [
      [8080, 8080, "host"],
      [8443, 8443, "host"],
      [8448, 8448, "host"],
    ],
  );
  const s = spec("traefik-service");
  assert.equal(s.user, "10001:10001");
  assert.deepEqual(s.capAdds, []);
  assert.deepEqual(s.configs.map((c: Inputs) => [c.fileName, c.fileMode]), [
    ["/etc/traefik/traefik.yml", 0o444],
    ["/etc/traefik/dynamic.yml", 0o444],
  ]);
  assert.deepEqual(service.taskSpec.placement.constraints, ["node.labels.hardened-matrix.role.edge==true"]);
});

test("overlay networks fit inside WireGuard (MTU 1420) and are not attachable", () => {
  const networks = plan.resources.filter((x) => x.type === "docker:index/network:Network");
  assert.deepEqual(networks.map((n) => (n.inputs as Inputs).name).sort(), ["db", "docker-api", "edge"]);
  for (const r of networks) {
    const n = r.inputs as Inputs;
    assert.equal(n.driver, "overlay");
    assert.equal(n.options["com.docker.network.driver.mtu"], "1420");
    assert.equal(n.attachable, false);
  }
});

test("resources.json entries follow the contract", () => {
  for (const r of plan.resources) {
    assert.deepEqual(Object.keys(r).sort(), ["custom", "id", "inputs", "name", "options", "parent", "provider", "type", "urn"]);
    assert.deepEqual(Object.keys(r.options).sort(), ["additionalSecretOutputs", "aliases", "deleteBeforeReplace", "dependsOn", "ignoreChanges", "propertyDependencies", "protect", "replaceOnChanges", "replaceWith", "retainOnDelete"]);
  }
  const stack = plan.resources[0]!;
  assert.equal(stack.type, "pulumi:pulumi:Stack");
  const swarm = byName("local");
  assert.equal(swarm.parent, stack.urn);
  assert.equal(byName("local-init").parent, swarm.urn);
});

test("stack outputs: the URL and server name in clear, the registration secret as a secret", () => {
  const o = plan.outputs as Inputs;
  assert.equal(o.matrixUrl, "https://matrix.localhost:8443");
  assert.equal(o.serverName, "matrix.localhost");
  assert.equal(o.target, "local");
  assert.ok(o.registrationSharedSecret.secret, "registrationSharedSecret must be a secret output");
  assert.match(o.signingKeyId, /^ed25519:hm_[0-9a-f]{8}$/);
});

// HSTS over what every stack file deploys: each router Traefik would answer on the server name (the
// apex: /.well-known/matrix, or federation with SRV delegation) or on the Matrix host, with the
// headers middlewares in effect there (entrypoint's, then router's), resolved from the rendered
// dynamic config and the Dendrite service's labels. includeSubDomains on the apex would force HTTPS
// on every name of the operator's domain for a year (RFC 6797 section 6.1.2).
describe("HSTS on every stack file", () => {
  const PROBES = ["/.well-known/matrix/server", "/.well-known/matrix/client", "/_matrix/federation/v1/version", "/_matrix/key/v2/server", "/_matrix/client/versions", "/_matrix/media/v3/upload"];
  for (const stack of STACKS) {
    test(stack, () => {
      const p = planToDisk(stack);
      const staticConfig = parse(p.files.get("traefik-static/traefik.yml")!);
      const dynamic = parse(p.files.get("traefik-dynamic/dynamic.yml")!);
      const service = p.resources.find((r) => r.name === "dendrite-service")!;
      const labels = Object.fromEntries(((service.inputs as Inputs).labels as { label: string; value: string }[]).map((l) => [l.label, l.value]));
      const routers = [...routersFromLabels(labels), ...routersFromDynamic(dynamic)];
      const epMiddlewares = Object.fromEntries(Object.entries(staticConfig.entryPoints as Record<string, { http?: { middlewares?: string[] } }>).map(([ep, e]) => [ep, e.http?.middlewares ?? []]));
      const headersOf = (name: string): { stsSeconds?: number; stsIncludeSubdomains?: boolean } | undefined => {
        if (name.endsWith("@file")) return dynamic.http.middlewares[name.slice(0, -"@file".length)]?.headers;
        const prefix = `traefik.http.middlewares.${name}.headers.`;
        const keys = Object.keys(labels).filter((k) => k.startsWith(prefix));
        if (keys.length === 0) return undefined;
        const get = (k: string) => Object.entries(labels).find(([l]) => l.toLowerCase() === `${prefix}${k}`.toLowerCase())?.[1];
        return { stsSeconds: Number(get("stsSeconds") ?? 0), stsIncludeSubdomains: get("stsIncludeSubdomains") === "true" };
      };
      const serverName = String(p.outputs.serverName);
      const matrixHost = new URL(String(p.outputs.matrixUrl)).hostname;
      let answered = 0;
      for (const host of [...new Set([serverName, matrixHost])]) {
        for (const entryPoint of Object.keys(epMiddlewares).filter((ep) => ep !== "web" && ep !== "ping")) {
          for (const path of PROBES) {
            const routed = route(routers, epMiddlewares, { entryPoint, host, path, method: "GET" });
            if (!routed) continue;
            answered++;
            const headers = routed.middlewares.map(headersOf).filter((h) => h !== undefined);
            const where = `${stack}: ${host}${path} on ${entryPoint} (${routed.router}, ${routed.middlewares.join(",")})`;
            assert.ok(!headers.some((h) => h.stsIncludeSubdomains), `${where} sends HSTS includeSubDomains`);
            assert.ok(headers.some((h) => (h.stsSeconds ?? 0) >= 31536000), `${where} sends no HSTS`);
          }
        }
      }
      assert.ok(answered > 0, `${stack}: no probe answered`);
    });
  }
});

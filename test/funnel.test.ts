import assert from "node:assert/strict";
import { settingsFor, problemsFor, problemsOf } from "./support/settings";
import { before, describe, test } from "node:test";
import { parse } from "yaml";
import { FUNNEL_PORT, funnelSubnet, renderServeConfig, renderWellKnownWorker, serveConfig, wellKnownDocuments } from "../components/render/funnel";
import { TRAEFIK_PORTS } from "../components/render/traefik";
import { FUNNEL_USER } from "../components/services/funnel";
import { planStack, type Plan } from "../plan/plan";
import { FIREWALL, named, ofType, raw, RECORD, VOLUME, type Inputs } from "./support/cloud";
import { plannedFile } from "./support/planned";

const P = "hardened-matrix:";
const FQDN = "matrix.tail0example.ts.net";



describe("settings: ingress", () => {
  test("the funnel stack file is valid: the Matrix host is the ts.net name and Traefik serves no well-known", () => {
    const s = settingsFor("funnel");
    assert.equal(s.ingress, "funnel");
    assert.equal(s.matrixFqdn, FQDN);
    assert.equal(s.servesWellKnown, false);
    assert.equal(s.turnEnabled, false);
  });

  test("public is the default, and dev/prod stay public", () => {
    for (const stack of ["local", "dev", "prod"]) assert.equal(settingsFor(stack).ingress, "public");
  });

  test("funnel is refused on the local target and with headscale, naming the key", () => {
    const local = problemsFor("local", { [`${P}ingress`]: "funnel", [`${P}funnelFqdn`]: FQDN, [`${P}turnEnabled`]: false });
    assert.ok(local.some((p) => /^hardened-matrix:ingress: "funnel" needs a Tailscale tailnet.*allowed: public/.test(p)), local.join("\n"));
    const hs = problemsFor("funnel", { [`${P}vpn`]: "headscale" });
    assert.ok(hs.some((p) => /^hardened-matrix:ingress: "funnel" works only with vpn "tailscale".*Headscale has none.*vpn is "headscale"/.test(p)), hs.join("\n"));
  });

  test("the ts.net name is required and checked", () => {
    assert.ok(problemsFor("funnel", { [`${P}funnelFqdn`]: "" }).some((p) => p.startsWith("hardened-matrix:funnelFqdn: is required with ingress \"funnel\"")));
    const [bad] = problemsFor("funnel", { [`${P}funnelFqdn`]: "matrix.example.org" });
    assert.match(bad!, /^hardened-matrix:funnelFqdn: "matrix.example.org" is not a Tailscale Funnel name <host>.<tailnet>.ts.net/);
  });

  test("TURN stays off unless its ports are opened explicitly", () => {
    const on = problemsFor("funnel", { [`${P}turnEnabled`]: true });
    assert.ok(on.some((p) => /^hardened-matrix:turnEnabled: TURN is UDP and cannot go through Funnel.*funnelTurnPorts true/.test(p)), on.join("\n"));
    const open = settingsFor("funnel", {
      [`${P}turnEnabled`]: true,
      [`${P}funnelTurnPorts`]: true,
      [`${P}nodes`]: [{ name: "hm-funnel-1", size: "s-1vcpu-2gb", roles: ["manager", "edge", "db", "turn"] }],
    });
    assert.equal(open.turnEnabled, true);
    assert.deepEqual(problemsFor("funnel", { [`${P}funnelTurnPorts`]: true }), ["hardened-matrix:funnelTurnPorts: is true but turnEnabled is false; there are no TURN ports to open"]);
  });

  test("SRV delegation, an ACME CA and a missing Cloudflare account are refused with funnel", () => {
    assert.ok(problemsFor("funnel", { [`${P}delegation`]: "srv" }).some((p) => /^hardened-matrix:delegation: "srv" cannot work with ingress "funnel".*allowed: well-known/.test(p)));
    assert.ok(problemsFor("funnel", { [`${P}acmeCa`]: "letsencrypt", [`${P}acmeEmail`]: "ops@example.org" }).some((p) => /^hardened-matrix:acmeCa: "letsencrypt" with ingress "funnel".*allowed: none/.test(p)));
    assert.ok(problemsFor("funnel", { [`${P}cloudflareAccountId`]: "" }).some((p) => p.startsWith("hardened-matrix:cloudflareAccountId: is required with ingress \"funnel\"")));
  });

  test("the swarm address pool must leave its last /24 to the Funnel network", () => {
    assert.deepEqual(problemsFor("funnel", { [`${P}swarmAddressPool`]: "10.20.0.0/24" }), [
      'hardened-matrix:swarmAddressPool: "10.20.0.0/24" with ingress "funnel" must be /23 or larger: its last /24 is the Funnel network\'s, the rest Swarm\'s',
    ]);
    assert.deepEqual(problemsOf("funnel", { [`${P}swarmAddressPool`]: "10.20.0.0/23" }), []);
    assert.deepEqual(problemsOf("dev", { [`${P}swarmAddressPool`]: "10.20.0.0/24" }), [], "only funnel carves a /24");
    assert.equal(funnelSubnet("10.20.0.0/16"), "10.20.255.0/24");
    assert.equal(funnelSubnet("10.20.0.0/23"), "10.20.1.0/24");
    assert.equal(funnelSubnet("10.64.0.0/12"), "10.79.255.0/24");
    assert.throws(() => funnelSubnet("10.20.0.0/24"), /swarmAddressPool "10.20.0.0\/24" is not an IPv4 range of \/8 to \/23/);
  });

  test("funnel-only keys are refused with ingress public", () => {
    const problems = problemsFor("dev", { [`${P}funnelFqdn`]: FQDN, [`${P}funnelTurnPorts`]: true, [`${P}cloudflareAccountId`]: "abcdef0123456789abcdef0123456789" });
    assert.deepEqual(problems.sort(), [
      'hardened-matrix:cloudflareAccountId: is set but ingress is "public"; it is used only by ingress "funnel"',
      'hardened-matrix:funnelFqdn: is set but ingress is "public"; it only applies to ingress "funnel"',
      'hardened-matrix:funnelTurnPorts: is true but ingress is "public"; it only applies to ingress "funnel"',
    ]);
  });
});

/**
 * ipn.ServeConfig as declared by tailscale/tailscale v1.102.3 ipn/serve.go (struct fields, JSON
 * names = Go names, no tags renaming them): the map key types are uint16 (TCP) and HostPort
 * ("host:port", parsed by HostPort.Port with net.SplitHostPort and ParseUint(.., 16)).
 */
const SERVE_CONFIG_FIELDS = ["TCP", "Web", "Services", "AllowFunnel", "Foreground"];
const TCP_PORT_HANDLER = { HTTPS: "boolean", HTTP: "boolean", TCPForward: "string", TerminateTLS: "string", ProxyProtocol: "number" } as const;
const WEB_SERVER_CONFIG = ["Handlers"];
const HTTP_HANDLER = { Path: "string", Proxy: "string", Text: "string", AcceptAppCaps: "object", Redirect: "string" } as const;

function uint16(text: string): boolean {
  return /^\d+$/.test(text) && Number(text) <= 65535;
}
function hostPort(text: string): boolean {
  const cut = text.lastIndexOf(":");
  return cut > 0 && uint16(text.slice(cut + 1));
}
function exactKeys(where: string, obj: unknown, allowed: readonly string[]): Record<string, unknown> {
  assert.ok(obj !== null && typeof obj === "object" && !Array.isArray(obj), `${where} is not an object`);
  for (const k of Object.keys(obj)) assert.ok(allowed.includes(k), `${where}: "${k}" is not a field of the Go struct (json.Unmarshal would drop it); allowed: ${allowed.join(", ")}`);
  return obj as Record<string, unknown>;
}

/** Checks a serve config against the Go declaration, and what containerboot + tailscaled need for Funnel. */
function checkServeConfig(text: string): void {
  const sc = exactKeys("ServeConfig", JSON.parse(text), SERVE_CONFIG_FIELDS);
  const tcp = exactKeys("TCP", sc.TCP, Object.keys(sc.TCP as object));
  for (const [port, handler] of Object.entries(tcp)) {
    assert.ok(uint16(port), `TCP key ${port} is not a uint16`);
    const h = exactKeys(`TCP[${port}]`, handler, Object.keys(TCP_PORT_HANDLER));
    for (const [k, v] of Object.entries(h)) assert.equal(typeof v, TCP_PORT_HANDLER[k as keyof typeof TCP_PORT_HANDLER], `TCP[${port}].${k}`);
    assert.ok(!(h.HTTPS && h.TCPForward), "HTTPS and TCPForward are mutually exclusive");
  }
  for (const [hp, web] of Object.entries(sc.Web as object)) {
    assert.ok(hostPort(hp), `Web key ${hp} is not host:port`);
    const w = exactKeys(`Web[${hp}]`, web, WEB_SERVER_CONFIG);
    for (const [mount, handler] of Object.entries(w.Handlers as object)) {
      assert.ok(mount.startsWith("/"), `mount point ${mount}`);
      const h = exactKeys(`Handlers[${mount}]`, handler, Object.keys(HTTP_HANDLER));
      const set = ["Path", "Proxy", "Text", "Redirect"].filter((k) => h[k] !== undefined);
      assert.equal(set.length, 1, `exactly one of Path, Proxy, Text, Redirect (ipn/serve.go HTTPHandler), got ${set.join(", ")}`);
      for (const [k, v] of Object.entries(h)) assert.equal(typeof v, HTTP_HANDLER[k as keyof typeof HTTP_HANDLER], `Handlers[${mount}].${k}`);
    }
    // An HTTPS web server needs its port marked HTTPS in TCP.
    assert.equal((tcp[hp.slice(hp.lastIndexOf(":") + 1)] as Inputs | undefined)?.HTTPS, true, `TCP has no HTTPS handler for ${hp}`);
  }
  for (const [hp, on] of Object.entries(sc.AllowFunnel as object)) {
    assert.ok(hostPort(hp), `AllowFunnel key ${hp} is not host:port`);
    assert.equal(typeof on, "boolean");
    assert.ok([443, 8443, 10000].includes(Number(hp.slice(hp.lastIndexOf(":") + 1))), `Funnel listens only on 443, 8443, 10000, not ${hp}`);
    assert.ok((sc.Web as Inputs)[hp], `AllowFunnel ${hp} has no Web server`);
    assert.match(hp, /\.ts\.net:\d+$/, "Funnel serves only ts.net names");
  }
}

describe("serve config", () => {
  const text = renderServeConfig({ fqdn: FQDN, upstream: `http://traefik:${TRAEFIK_PORTS.funnel}` });

  test("has the shape of tailscale's ipn.ServeConfig and funnels 443 of the ts.net name to Traefik", () => {
    checkServeConfig(text);
    assert.deepEqual(JSON.parse(text), {
      TCP: { "443": { HTTPS: true } },
      Web: { [`${FQDN}:443`]: { Handlers: { "/": { Proxy: "http://traefik:8081" } } } },
      AllowFunnel: { [`${FQDN}:443`]: true },
    });
  });

  test("the checker catches a misspelt field, a wrong type and a port Funnel does not serve", () => {
    const sc = serveConfig({ fqdn: FQDN, upstream: "http://traefik:8081" });
    assert.throws(() => checkServeConfig(JSON.stringify({ ...sc, AllowFunnels: sc.AllowFunnel })), /not a field/);
    assert.throws(() => checkServeConfig(JSON.stringify({ ...sc, TCP: { "443": { HTTPS: "true" } } })), /TCP\[443\]\.HTTPS/);
    assert.throws(() => checkServeConfig(JSON.stringify({ ...sc, Web: { [`${FQDN}:443`]: { Handlers: { "/": { Proxy: "x", Text: "y" } } } } })), /exactly one/);
    const on8080 = `${FQDN}:8080`;
    assert.throws(() => checkServeConfig(JSON.stringify({ TCP: { "8080": { HTTPS: true } }, Web: { [on8080]: sc.Web[`${FQDN}:443`] }, AllowFunnel: { [on8080]: true } })), /only on 443/);
  });

  test("refuses a name outside ts.net and an upstream that is not plain http://host:port", () => {
    assert.throws(() => serveConfig({ fqdn: "matrix.example.org", upstream: "http://traefik:8081" }), /ts\.net/);
    assert.throws(() => serveConfig({ fqdn: FQDN, upstream: "https://traefik:8081" }), /upstream/);
  });
});

describe("well-known documents", () => {
  test("are JSON naming the ts.net host with its explicit port, and its base URL", () => {
    const docs = wellKnownDocuments({ fqdn: FQDN });
    assert.deepEqual(JSON.parse(docs.server), { "m.server": `${FQDN}:${FUNNEL_PORT}` });
    assert.deepEqual(JSON.parse(docs.client), { "m.homeserver": { base_url: `https://${FQDN}` } });
  });

  test("the Worker (run by node's own fetch API) answers both paths with CORS and passes the rest on", async () => {
    const docs = wellKnownDocuments({ fqdn: FQDN });
    const source = renderWellKnownWorker(docs);
    const worker = (await import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`)).default as { fetch(r: Request): Promise<Response> };
    const server = await worker.fetch(new Request("https://example.org/.well-known/matrix/server"));
    assert.equal(server.headers.get("content-type"), "application/json");
    assert.equal(server.headers.get("access-control-allow-origin"), "*");
    assert.deepEqual(await server.json(), { "m.server": `${FQDN}:443` });
    const client = await worker.fetch(new Request("https://example.org/.well-known/matrix/client?x=1"));
    assert.deepEqual(await client.json(), JSON.parse(docs.client));
    // Anything else goes to the origin: the Worker's global fetch, replaced here so no traffic leaves.
    const realFetch = globalThis.fetch;
    const seen: string[] = [];
    globalThis.fetch = (async (r: Request) => (seen.push(r.url), new Response("origin"))) as typeof fetch;
    try {
      assert.equal(await (await worker.fetch(new Request("https://example.org/.well-known/matrix/support"))).text(), "origin");
      assert.equal(await (await worker.fetch(new Request("https://example.org/__proto__"))).text(), "origin");
    } finally {
      globalThis.fetch = realFetch;
    }
    assert.deepEqual(seen, ["https://example.org/.well-known/matrix/support", "https://example.org/__proto__"]);
  });
});

// The real program, funnel stack, under mocks.
let plan: Plan;
before(async () => {
  plan = await planStack("funnel");
  assert.equal(plan.error, undefined, String(plan.error));
});

describe("funnel stack plan", () => {
  test("no firewall rule admits anything from the internet; the mesh and ICMP only from the cluster", () => {
    const firewalls = ofType(plan, FIREWALL);
    assert.ok(firewalls.length > 0);
    for (const fw of firewalls) {
      for (const rule of ((fw.inputs as Inputs).inboundRules ?? []) as Inputs[]) {
        assert.deepEqual(rule.sourceAddresses ?? [], [], `${fw.name}: ${rule.protocol} ${rule.portRange ?? ""} is open to ${rule.sourceAddresses}`);
        assert.deepEqual(rule.sourceTags, ["hardened-matrix-funnel"], `${fw.name}: inbound only from the deployment's droplets`);
      }
    }
  });

  test("no DNS record points at a node; the well-known documents come from a Worker on the server name", () => {
    assert.deepEqual(ofType(plan, RECORD).filter((r) => ["A", "AAAA", "CNAME", "SRV"].includes(String((r.inputs as Inputs).type))), []);
    const route = ofType(plan, "cloudflare:index/workersRoute:WorkersRoute");
    assert.equal(route.length, 1);
    assert.equal((route[0]!.inputs as Inputs).pattern, "example.org/.well-known/matrix/*");
    const script = ofType(plan, "cloudflare:index/workersScript:WorkersScript")[0]!;
    assert.equal((script.inputs as Inputs).accountId, "abcdef0123456789abcdef0123456789");
    assert.ok(String((script.inputs as Inputs).content).includes(JSON.stringify(plan.outputs.wellKnownServer)));
  });

  test("the well-known documents are stack outputs: JSON with the ts.net host and port", () => {
    assert.deepEqual(JSON.parse(String(plan.outputs.wellKnownServer)), { "m.server": `${FQDN}:443` });
    assert.deepEqual(JSON.parse(String(plan.outputs.wellKnownClient)), { "m.homeserver": { base_url: `https://${FQDN}` } });
    assert.equal(plan.outputs.matrixUrl, `https://${FQDN}`);
  });

  test("Traefik publishes only the VPN-only admin port and takes Funnel's requests on its funnel entrypoint", () => {
    const traefik = (named(plan, "traefik-service").inputs as Inputs);
    assert.deepEqual(((traefik.endpointSpec?.ports ?? []) as Inputs[]).map((p) => p.publishedPort), [9443]);
    const staticConfig = parse(plannedFile(plan, "traefik-static/traefik.yml")) as Inputs;
    assert.equal(staticConfig.entryPoints.funnel.address, `:${TRAEFIK_PORTS.funnel}`);
    assert.equal(staticConfig.entryPoints.funnel.http.tls, undefined, "Tailscale ended TLS");
    assert.equal(staticConfig.certificatesResolvers, undefined);
    const labels = Object.fromEntries(((named(plan, "dendrite-service").inputs as Inputs).labels as Inputs[]).map((l) => [l.label, l.value]));
    const entrypoints = Object.entries(labels).filter(([k]) => k.endsWith(".entrypoints")).map(([, v]) => v);
    assert.ok(entrypoints.length >= 3);
    assert.deepEqual([...new Set(entrypoints)], ["funnel"]);
    assert.equal(labels["traefik.http.routers.dendrite-client.rule"].includes(`Host(\`${FQDN}\`)`), true);
  });

  test("the serve config in the plan funnels 443 to Traefik's funnel entrypoint over a network shared with Traefik alone", () => {
    const text = plannedFile(plan, "funnel-serve/serve.json");
    checkServeConfig(text);
    const proxy = JSON.parse(text).Web[`${FQDN}:443`].Handlers["/"].Proxy;
    assert.equal(proxy, `http://traefik:${TRAEFIK_PORTS.funnel}`);
    const net = named(plan, "funnel-net");
    const onNet = ofType(plan, "docker:index/service:Service").filter((s) => ((s.inputs as Inputs).taskSpec.networksAdvanceds as Inputs[]).some((n) => n.id === net.id));
    assert.deepEqual(onNet.map((s) => (s.inputs as Inputs).name).sort(), ["funnel", "traefik"]);
  });

  test("Traefik trusts forwarded headers on the funnel entrypoint from exactly the Funnel network's fixed subnet, and nowhere else", () => {
    // Without it Traefik drops the X-Forwarded-For tailscaled sets (pkg/middlewares/forwardedheaders
    // ServeHTTP) and Dendrite's rate limiter (internal/httputil/rate_limiting.go: X-Forwarded-For, else
    // RemoteAddr) sees every client as the Funnel container.
    const net = named(plan, "funnel-net").inputs as Inputs;
    const subnet = net.ipamConfigs?.[0]?.subnet;
    assert.deepEqual(net.ipamConfigs, [{ subnet: "10.20.255.0/24" }], "the last /24 of swarmAddressPool 10.20.0.0/16");
    const staticConfig = parse(plannedFile(plan, "traefik-static/traefik.yml")) as Inputs;
    assert.deepEqual(staticConfig.entryPoints.funnel.forwardedHeaders, { trustedIPs: [subnet] });
    for (const [ep, e] of Object.entries(staticConfig.entryPoints as Record<string, Inputs>)) if (ep !== "funnel") assert.equal(e.forwardedHeaders, undefined, ep);
    // No other network of the plan takes a fixed range that could overlap it.
    const fixed = ofType(plan, "docker:index/network:Network").filter((n) => (n.inputs as Inputs).ipamConfigs !== undefined);
    assert.deepEqual(fixed.map((n) => n.name), ["funnel-net"]);
    // Dendrite reads the client from X-Forwarded-For's first address, which tailscaled set.
    const dendrite = parse(plannedFile(plan, "dendrite-config/dendrite.yaml")) as Inputs;
    assert.equal(dendrite.sync_api.real_ip_header, "X-Forwarded-For");
  });

  test("the Funnel service: userspace, non-root, no capability, read-only, its key a secret file, its state on a protected volume", () => {
    const svc = named(plan, "funnel-service");
    const inputs = svc.inputs as Inputs;
    const spec = inputs.taskSpec.containerSpec as Inputs;
    assert.equal(spec.image, "tailscale/tailscale:v1.102.3");
    assert.equal(spec.user, FUNNEL_USER);
    assert.notEqual(spec.user.split(":")[0], "0");
    assert.deepEqual(spec.capDrops, ["ALL"]);
    assert.deepEqual(spec.capAdds, []);
    assert.equal(spec.readOnly, true);
    assert.equal(spec.devices, undefined, "no /dev/net/tun");
    assert.deepEqual(((inputs.labels ?? []) as Inputs[]).filter((l) => String(l.label).startsWith("hardened-matrix.exception.")), [], "no hardening exception");
    assert.equal(inputs.taskSpec.networksAdvanceds.some((n: Inputs) => n.name === "host"), false);
    assert.equal(inputs.endpointSpec, undefined, "publishes nothing");
    assert.deepEqual(inputs.taskSpec.placement.constraints, ["node.labels.hardened-matrix.role.edge==true"]);
    const env = spec.env as Record<string, string>;
    assert.equal(env.TS_USERSPACE, "true");
    assert.equal(env.TS_AUTHKEY, "file:/run/secrets/tailscale-authkey");
    assert.equal(env.TS_HOSTNAME, "matrix");
    assert.equal(env.TS_SERVE_CONFIG, "/etc/tailscale/serve.json");
    assert.equal(env.TS_STATE_DIR, "/var/lib/tailscale");
    // The key never appears in the service's own inputs: only in the Swarm secret, as a secret.
    const rawSpec = JSON.stringify(raw(plan, svc));
    assert.doesNotMatch(rawSpec, /tskey-/);
    const secret = named(plan, "funnel-authkey");
    assert.equal((secret.inputs as Inputs).data, "[secret]");
    const mount = (spec.secrets as Inputs[])[0]!;
    assert.equal(mount.fileName, "/run/secrets/tailscale-authkey");
    assert.equal(mount.fileMode, 0o400);
    assert.equal(`${mount.fileUid}:${mount.fileGid}`, FUNNEL_USER);
    const key = ofType(plan, "tailscale:index/tailnetKey:TailnetKey").find((k) => k.name === "cloud-funnel-key")!;
    assert.deepEqual((key.inputs as Inputs).tags, ["tag:hm-funnel-funnel"]);
    assert.equal((key.inputs as Inputs).reusable, false);
    assert.equal((key.inputs as Inputs).preauthorized, true);
    // A refresh must not mint a new key: it would change the Swarm secret and restart the only ingress.
    assert.equal((key.inputs as Inputs).recreateIfInvalid, "never");
    const state = (spec.mounts as Inputs[]).find((m) => m.target === "/var/lib/tailscale")!;
    assert.equal(state.type, "bind");
    const volume = ofType(plan, VOLUME).find((v) => (v.inputs as Inputs).name === "hm-funnel-funnel");
    assert.ok(volume, "the Funnel state has its own volume");
    assert.equal(volume.options.protect, true);
    assert.equal(state.source, "/mnt/hm-funnel-funnel/funnel");
  });

  test("the tailnet's HTTPS certificates are turned on, and nothing else of its settings", () => {
    const [settings, ...more] = ofType(plan, "tailscale:index/tailnetSettings:TailnetSettings");
    assert.equal(more.length, 0);
    assert.deepEqual(settings!.inputs, { httpsEnabled: true });
  });

  test("the tailnet policy gives the funnel attribute to the Funnel device's tag only", () => {
    const policy = JSON.parse(plannedFile(plan, "cloud-tailnet-acl/policy.json")) as Inputs;
    assert.deepEqual(policy.nodeAttrs, [{ target: ["tag:hm-funnel-funnel"], attr: ["funnel"] }]);
  });
});

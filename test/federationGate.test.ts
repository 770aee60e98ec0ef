import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { before, test } from "node:test";
import { renderFederationGate } from "../components/render/federationGate";
import { planStack, type Plan } from "../plan/plan";
import { named, plannedFile, type Inputs } from "./support/planned";

// The gate's decision, on the very file the renderer produces (loaded as a module: it starts its
// server only when run as the main program).
interface Gate {
  decide(values: string[], allowed: string[]): { ok: boolean; reason?: string; origin?: string };
  authorizationValues(raw: string[]): string[];
  SETTINGS: { allowedOrigins: string[]; port: number };
}
const ALLOWED = ["friend.org", "origin.hs.example.com"];
let gate: Gate;
before(() => {
  const file = path.join(mkdtempSync(path.join(tmpdir(), "hm-gate-")), "gate.js");
  writeFileSync(file, renderFederationGate({ allowedOrigins: ALLOWED, port: 8090 }));
  gate = require(file) as Gate;
});
const sig = 'key="ed25519:a1",sig="dGVzdA"';
const accepts = (...values: string[]) => assert.equal(gate.decide(values, gate.SETTINGS.allowedOrigins).ok, true, JSON.stringify(values));
const refuses = (...values: string[]) => assert.equal(gate.decide(values, gate.SETTINGS.allowedOrigins).ok, false, JSON.stringify(values));

test("the rendered file carries the allowlist and port", () => {
  assert.deepEqual(gate.SETTINGS, { allowedOrigins: ["friend.org", "origin.hs.example.com"], port: 8090 });
  assert.throws(() => renderFederationGate({ allowedOrigins: [], port: 8090 }), /allowlist is empty/);
});

test("the two crafted headers that passed the old HeaderRegexp router are refused", () => {
  // Dendrite (gomatrixserverlib ParseAuthorization) takes the LAST origin: evil.net.
  refuses(`X-Matrix origin="friend.org",origin="evil.net",${sig}`);
  // The allowed name hides inside another parameter's quoted value; the origin is evil.net.
  refuses(`X-Matrix origin="evil.net",${sig},x="y origin=friend.org"`);
  assert.equal(gate.decide([`X-Matrix origin="evil.net",${sig},x="y origin=friend.org"`], ALLOWED).reason, "origin not allowed");
});

test("a header naming origin (or any parameter) twice is refused, whichever comes last", () => {
  refuses(`X-Matrix origin="evil.net",origin="friend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org",origin="friend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org",key="ed25519:a1",key="ed25519:b2",sig="x"`);
});

test("the spec's examples are accepted for an allowed origin", () => {
  // matrix-org/matrix-spec content/server-server-api.md, "Request Authentication", step 2 and the Python example.
  accepts('X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."');
  accepts('X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF"');
  // Order does not matter; unknown parameters are ignored.
  accepts(`X-Matrix ${sig},destination="us.example",origin="friend.org",extra="x"`);
});

test("quoted and unquoted origins; colons unquoted for older servers", () => {
  accepts(`X-Matrix origin="friend.org",${sig}`);
  accepts("X-Matrix origin=friend.org,key=ed25519:a1,sig=dGVzdA");
  refuses(`X-Matrix origin="evil.net",${sig}`);
  refuses(`X-Matrix origin=evil.net,${sig}`);
  refuses(`X-Matrix origin="evilfriend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org.evil.net",${sig}`);
  refuses(`X-Matrix origin="friend.org:8448",${sig}`);
});

test("parser disagreements are refused: a comma or an escape inside a quoted value", () => {
  // The spec reads origin friend.org; gomatrixserverlib splits on every comma and reads evil.net.
  refuses(`X-Matrix origin="friend.org",key="ed25519:a1,origin=evil.net",sig="x"`);
  // The spec unescapes to friend.org; gomatrixserverlib keeps the backslash.
  refuses(`X-Matrix origin="friend\\.org",${sig}`);
});

test("duplicated Authorization headers: all must agree on one allowed origin", () => {
  accepts(`X-Matrix origin="friend.org",${sig}`, `X-Matrix origin="friend.org",key="ed25519:b2",sig="eA"`);
  refuses(`X-Matrix origin="friend.org",${sig}`, `X-Matrix origin="evil.net",${sig}`);
  refuses(`X-Matrix origin="evil.net",${sig}`, `X-Matrix origin="friend.org",${sig}`);
  // Dendrite ignores other schemes; the gate does not guess and refuses.
  refuses(`X-Matrix origin="friend.org",${sig}`, "Bearer abc");
  refuses("Bearer abc", `X-Matrix origin="friend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org",${sig}`, "");
});

test("case: parameter names are case-insensitive in the spec but not in Dendrite, so only lower case passes", () => {
  refuses(`X-Matrix Origin="friend.org",${sig}`);
  refuses(`X-Matrix ORIGIN="friend.org",origin="evil.net",${sig}`);
  refuses(`x-matrix origin="friend.org",${sig}`);
  refuses(`X-Matrix origin="Friend.org",${sig}`);
});

test("whitespace: what the spec allows and Dendrite reads alike passes; anything else is refused", () => {
  accepts(`X-Matrix origin="friend.org" , ${sig}`);
  accepts(`X-Matrix origin="friend.org"\t,\t${sig}`);
  accepts(`X-Matrix   origin="friend.org",${sig}`);
  refuses(`X-Matrix origin=" friend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org ",${sig}`);
  refuses(`X-Matrix\torigin="friend.org",${sig}`);
  refuses(`X-Matrix origin="friend.org",${sig},`);
  refuses(`X-Matrix origin="friend.org",,${sig}`);
  refuses(`X-Matrix origin="frïend.org",${sig}`);
});

test("empty or missing origin, missing header, other schemes", () => {
  refuses(`X-Matrix origin="",${sig}`);
  refuses(`X-Matrix origin=,${sig}`);
  refuses(`X-Matrix ${sig}`);
  refuses("X-Matrix");
  refuses("X-Matrix ");
  refuses();
  refuses("Bearer friend.org");
  refuses(`Basic origin="friend.org"`);
});

test("every Authorization value is read from the raw headers, whatever its case", () => {
  assert.deepEqual(gate.authorizationValues(["Host", "x", "Authorization", "a", "authorization", "b", "AUTHORIZATION", "c"]), ["a", "b", "c"]);
});

// The program, under mocks: the gate exists only with an allowlist.
const plans = new Map<string, Plan>();
before(async () => {
  for (const mode of ["allowlist", "open", "closed"]) {
    const overrides: Record<string, unknown> = { "hardened-matrix:federationMode": mode };
    if (mode === "allowlist") overrides["hardened-matrix:federationAllowlist"] = ["friend.org", "matrix.org"];
    const plan = await planStack("local", overrides);
    assert.equal(plan.error, undefined, String(plan.error));
    plans.set(mode, plan);
  }
});
const labelsOf = (inputs: Inputs): Record<string, string> => Object.fromEntries((inputs.labels as { label: string; value: string }[]).map((l) => [l.label, l.value]));

test("allowlist: a hardened gate on an internal network shared with Traefik alone, called on the federation router", () => {
  const plan = plans.get("allowlist")!;
  const svc = named(plan, "federation-gate-service").inputs as Inputs;
  const spec = svc.taskSpec.containerSpec;
  assert.equal(svc.name, "federation-gate");
  assert.equal(spec.image, "node:24.19.0-alpine3.24");
  assert.equal(spec.user, "1000:1000");
  assert.equal(spec.readOnly, true);
  assert.deepEqual(spec.capDrops, ["ALL"]);
  assert.deepEqual(spec.capAdds, []);
  assert.deepEqual(spec.commands, ["/usr/local/bin/node", "--max-old-space-size=48", "/etc/federation-gate/gate.js"]);
  assert.equal(spec.healthcheck.tests[1], "/usr/local/bin/node");
  assert.ok(svc.taskSpec.resources.limits.memoryBytes > 0);
  assert.equal(svc.endpointSpec, undefined, "publishes nothing");
  assert.equal(Object.keys(labelsOf(svc)).filter((k) => k.startsWith("traefik.")).length, 0, "no router reaches the gate");
  // Its one network is internal, and only Traefik joins it besides the gate.
  const net = named(plan, "federation-gate-net");
  assert.equal((net.inputs as Inputs).internal, true);
  const joined = plan.resources
    .filter((r) => r.type === "docker:index/service:Service")
    .filter((r) => ((r.inputs as Inputs).taskSpec.networksAdvanceds as { id: string }[]).some((n) => n.id === net.id))
    .map((r) => (r.inputs as Inputs).name)
    .sort();
  assert.deepEqual(joined, ["federation-gate", "traefik"]);
  // The file delivered is the rendered gate with the stack's allowlist.
  assert.equal(spec.configs[0].fileName, "/etc/federation-gate/gate.js");
  assert.match(plannedFile(plan, "federation-gate-program/gate.js"), /^const SETTINGS = \{"allowedOrigins":\["friend\.org","matrix\.org"\],"port":8090\}; \/\/ rendered by hardened-matrix$/m);
  // Dendrite's federation router asks it.
  const l = labelsOf(named(plan, "dendrite-service").inputs as Inputs);
  assert.equal(l["traefik.http.routers.dendrite-federation.middlewares"], "matrix-federation-allowlist");
  assert.equal(l["traefik.http.middlewares.matrix-federation-allowlist.forwardauth.address"], "http://federation-gate:8090/verify");
});

test("open and closed federation: nothing of the gate", () => {
  for (const mode of ["open", "closed"]) {
    const plan = plans.get(mode)!;
    assert.ok(!plan.resources.some((r) => /federation-gate/.test(r.name)), mode);
    assert.ok(!plan.files.some((f) => /federation-gate/.test(f.path)), mode);
    const l = labelsOf(named(plan, "dendrite-service").inputs as Inputs);
    assert.ok(!Object.keys(l).some((k) => k.includes("matrix-federation-allowlist")), mode);
    const traefikNets = ((named(plan, "traefik-service").inputs as Inputs).taskSpec.networksAdvanceds as { id: string }[]).map((n) => n.id);
    const networkNames = traefikNets.map((id) => (plan.resources.find((r) => r.type === "docker:index/network:Network" && r.id === id)?.inputs as Inputs | undefined)?.name);
    assert.deepEqual(networkNames, ["edge", "docker-api"], mode);
  }
});

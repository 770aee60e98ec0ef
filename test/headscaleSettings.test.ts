import assert from "node:assert/strict";
import { settingsFor, problemsOf } from "./support/settings";
import { test } from "node:test";

// vpn: headscale settings, on the prod stack's values.


const prodNodes = () => settingsFor("prod").nodes;
const withControl = (roles: string[] = ["headscale"]) => [...prodNodes(), { name: "hs", size: "s-1vcpu-1gb", roles }];

test("defaults: headscaleHost hs, no DERP; the Headscale FQDN is derived", () => {
  const s = settingsFor("prod");
  assert.equal(s.headscaleHost, "hs");
  assert.equal(s.headscaleDerp, false);
  assert.equal(s.headscaleFqdn, `hs.${s.domain}`);
});

test("vpn headscale on DigitalOcean with one control node of its own is accepted", () => {
  assert.deepEqual(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl() }), []);
  assert.deepEqual(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:headscaleDerp": true, "hardened-matrix:nodes": withControl() }), []);
  assert.equal(settingsFor("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl() }).vpn, "headscale");
});

test("combinations that cannot work are refused, each naming its key", () => {
  assert.ok(problemsOf("prod", { "hardened-matrix:vpn": "headscale" }).includes('hardened-matrix:nodes: has 0 nodes with role "headscale"; allowed: exactly one while vpn is "headscale"'));
  const shared = problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl(["headscale", "turn"]) });
  assert.ok(shared.some((p) => p.startsWith(`hardened-matrix:nodes[${prodNodes().length}].roles: the "headscale" node carries no other role`)), shared.join("\n"));
  const two = [...withControl(), { name: "hs2", size: "s-1vcpu-1gb", roles: ["headscale"] }];
  assert.ok(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": two }).includes('hardened-matrix:nodes: has 2 nodes with role "headscale"; allowed: exactly one while vpn is "headscale"'));
  assert.ok(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl(), "hardened-matrix:admins": [] }).some((p) => p.startsWith("hardened-matrix:admins: lists no one")));
  assert.ok(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl(), "hardened-matrix:headscaleHost": "@" }).some((p) => p.startsWith("hardened-matrix:headscaleHost:")));
  const s = settingsFor("prod");
  const clash = problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl(), "hardened-matrix:headscaleHost": s.matrixHost });
  assert.ok(clash.some((p) => p.startsWith(`hardened-matrix:headscaleHost: ${s.matrixFqdn} is also the Matrix host`)), clash.join("\n"));
});

test("Tailscale-only features are refused with vpn headscale, naming their keys", () => {
  const hs = { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl() };
  assert.ok(problemsOf("prod", { ...hs, "hardened-matrix:ingress": "funnel" }).some((p) => p.startsWith('hardened-matrix:ingress: "funnel" is a Tailscale service')));
  assert.ok(problemsOf("prod", { ...hs, "hardened-matrix:deployerTag": "tag:hm-ci" }).some((p) => p.startsWith("hardened-matrix:deployerTag: CI runners join Tailscale's tailnet")));
});

test("a headscale role or DERP without vpn headscale is refused", () => {
  assert.ok(problemsOf("prod", { "hardened-matrix:nodes": withControl() }).some((p) => p === `hardened-matrix:nodes[${prodNodes().length}].roles: "headscale" is only for vpn "headscale" (vpn is "tailscale")`));
  assert.ok(problemsOf("prod", { "hardened-matrix:headscaleDerp": true }).includes('hardened-matrix:headscaleDerp: is only for vpn "headscale" (vpn is "tailscale"); allowed: false'));
  assert.ok(problemsOf("prod", { "hardened-matrix:headscaleHost": "Not A Label" }).some((p) => p.startsWith("hardened-matrix:headscaleHost:")));
});

test("vpn headscale needs a publicly trusted certificate: acmeCa letsencrypt-staging (or none) is refused, naming acmeCa", () => {
  const hs = { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": withControl() };
  for (const ca of ["letsencrypt-staging", "none"]) {
    const problems = problemsOf("prod", { ...hs, "hardened-matrix:acmeCa": ca });
    assert.ok(problems.some((p) => p.startsWith(`hardened-matrix:acmeCa: "${ca}" cannot serve Headscale`) && p.endsWith('allowed with vpn "headscale": letsencrypt')), problems.join("\n"));
  }
  assert.deepEqual(problemsOf("prod", { ...hs, "hardened-matrix:acmeCa": "letsencrypt" }), []);
  // Tailscale mode keeps staging (Traefik's certificate is for browsers the operator points at it).
  assert.ok(!problemsOf("prod", { "hardened-matrix:acmeCa": "letsencrypt-staging" }).some((p) => p.startsWith("hardened-matrix:acmeCa:")));
});

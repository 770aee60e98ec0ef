import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parse } from "yaml";
import { headscaleConfig, renderHeadscaleConfig, renderHeadscalePolicy, HEADSCALE_PORTS, type HeadscaleConfigInput } from "../components/render/headscale";
import { renderTailnetPolicy, type TailnetPolicyInput } from "../components/render/tailscaleAcl";
import { headscaleFirewallPlan } from "../components/render/headscaleFirewall";
import { headscaleConfigSchema, headscalePolicySchema } from "./headscaleConfigSchema";
import { mayReach, sshAction, type Device, type Policy } from "./support/tailnetPolicyEvaluator";

const input: HeadscaleConfigInput = { serverFqdn: "hs.example.org", acmeEmail: "ops@example.org", acmeCa: "letsencrypt", derp: false };

/** HuJSON to JSON as tailscale/hujson Standardize does: comments and trailing commas out (strings untouched). */
function standardize(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j;
    } else if (c === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i++;
      out += "\n";
    } else if (c === "/" && text[i + 1] === "*") {
      i = text.indexOf("*/", i + 2) + 1;
    } else out += c;
  }
  return out.replace(/,(\s*[}\]])/g, "$1");
}

describe("Headscale config", () => {
  const rendered = parse(renderHeadscaleConfig(input)) as Record<string, unknown>;

  test("the rendered file passes the strict model of v0.29.2's keys", () => {
    const res = headscaleConfigSchema.safeParse(rendered);
    assert.ok(res.success, JSON.stringify(res.error?.issues));
    assert.ok(headscaleConfigSchema.safeParse(parse(renderHeadscaleConfig({ ...input, derp: true, acmeCa: "letsencrypt-staging" }))).success);
  });

  test("the schema can fail: a misspelled key, a wrong challenge, a server under the base domain", () => {
    const typo = { ...rendered, listen_adr: "0.0.0.0:443" };
    assert.equal(headscaleConfigSchema.safeParse(typo).success, false);
    const nested = structuredClone(rendered) as { dns: Record<string, unknown> };
    nested.dns.magicdns = true;
    assert.equal(headscaleConfigSchema.safeParse(nested).success, false);
    assert.equal(headscaleConfigSchema.safeParse({ ...rendered, tls_letsencrypt_challenge_type: "DNS-01" }).success, false);
    const clash = structuredClone(rendered) as { dns: Record<string, unknown> };
    clash.dns.base_domain = "example.org";
    assert.equal(headscaleConfigSchema.safeParse(clash).success, false);
    assert.equal(headscaleConfigSchema.safeParse({ ...rendered, listen_addr: "0.0.0.0:8080" }).success, false, "TLS-ALPN-01 needs :443");
  });

  test("metrics and gRPC stay on loopback, gRPC never insecure, TLS from ACME on 443", () => {
    const c = headscaleConfig(input);
    assert.equal(c.metrics_listen_addr, `127.0.0.1:${HEADSCALE_PORTS.metrics}`);
    assert.equal(c.grpc_listen_addr, `127.0.0.1:${HEADSCALE_PORTS.grpc}`);
    assert.equal(c.grpc_allow_insecure, false);
    assert.equal(c.listen_addr, "0.0.0.0:443");
    assert.equal(c.server_url, "https://hs.example.org");
    assert.equal(c.tls_letsencrypt_hostname, "hs.example.org");
    assert.equal(c.acme_url, "https://acme-v02.api.letsencrypt.org/directory");
    assert.deepEqual(c.trusted_proxies, []);
    assert.equal(c.disable_check_updates, true);
  });

  test("DERP: off by default (Tailscale's public relays, no STUN port); on, our own relay only", () => {
    const off = headscaleConfig(input) as { derp: { server: Record<string, unknown>; urls: string[] } };
    assert.deepEqual(off.derp.server, { enabled: false });
    assert.equal(off.derp.urls.length, 1);
    const on = headscaleConfig({ ...input, derp: true }) as { derp: { server: Record<string, unknown>; urls: string[] } };
    assert.equal(on.derp.server.enabled, true);
    assert.equal(on.derp.server.stun_listen_addr, "0.0.0.0:3478");
    assert.equal(on.derp.server.verify_clients, true);
    assert.deepEqual(on.derp.urls, []);
  });

  test("bad input is refused with a clear message", () => {
    assert.throws(() => headscaleConfig({ ...input, serverFqdn: "hs.hm.internal" }), /base domain/);
    assert.throws(() => headscaleConfig({ ...input, serverFqdn: "not a name" }), /not a DNS name/);
    assert.throws(() => headscaleConfig({ ...input, acmeEmail: "" }), /acmeEmail/);
  });
});

describe("Headscale policy", () => {
  const pin: TailnetPolicyInput = { admins: ["alice@example.com", "bob@example.com"], nodeTag: "tag:hm-node", adminPorts: [22, 9443], sshUsers: ["root"] };
  const text = renderHeadscalePolicy(pin);
  const policy = JSON.parse(standardize(text)) as Policy;
  const alice: Device = { user: "alice@example.com", tags: [] };
  const mallory: Device = { user: "mallory@example.com", tags: [] };
  const node: Device = { user: "alice@example.com", tags: ["tag:hm-node"] };
  const otherNode: Device = { tags: ["tag:hm-node"] };

  test("is HuJSON (a comment) with only members Headscale's Policy knows", () => {
    assert.match(text, /^\/\//);
    assert.throws(() => JSON.parse(text));
    const res = headscalePolicySchema.safeParse(policy);
    assert.ok(res.success, JSON.stringify(res.error?.issues));
    assert.equal(headscalePolicySchema.safeParse({ ...policy, acl: [] }).success, false, "an unknown member fails, as json.RejectUnknownMembers does");
  });

  test("has the very rules of the Tailscale policy", () => {
    assert.deepEqual(policy, JSON.parse(renderTailnetPolicy(pin)));
  });

  test("admins reach nodes on the admin ports only; others, nodes-to-admins and nodes-to-nodes are denied", () => {
    assert.equal(mayReach(policy, alice, node, 22), true);
    assert.equal(mayReach(policy, alice, node, 9443), true);
    assert.equal(mayReach(policy, alice, node, 5432), false);
    assert.equal(mayReach(policy, mallory, node, 22), false);
    assert.equal(mayReach(policy, node, alice, 22), false);
    // Nodes talk over the WireGuard mesh only: the VPN gives them nothing of each other (issue 11).
    for (const port of [22, 2377, 5432]) assert.equal(mayReach(policy, node, otherNode, port), false, `node to node on ${port}`);
  });

  test("Tailscale SSH for admins only, as root only", () => {
    assert.equal(sshAction(policy, alice, node, "root"), "accept");
    assert.equal(sshAction(policy, alice, node, "postgres"), undefined);
    assert.equal(sshAction(policy, mallory, node, "root"), undefined);
    assert.equal(sshAction(policy, otherNode, node, "root"), undefined);
  });

  test("the policy's own tests (which Headscale 0.29 runs: hscontrol/policy/v2/test.go) hold under the evaluator", () => {
    assert.ok((policy.tests ?? []).length > 0);
    for (const t of policy.tests ?? []) {
      const src: Device = { user: t.src, tags: [] };
      for (const [list, expected] of [[t.accept ?? [], true], [t.deny ?? [], false]] as const) {
        for (const entry of list) {
          const cut = entry.lastIndexOf(":");
          assert.equal(mayReach(policy, src, { tags: [entry.slice(0, cut)] }, Number(entry.slice(cut + 1))), expected, `${t.src} -> ${entry}`);
        }
      }
    }
  });

  test("the standardizer keeps strings and drops comments", () => {
    assert.deepEqual(JSON.parse(standardize('// c\n{"a": "x//y", /* z */ "b": [1,],}')), { a: "x//y", b: [1] });
  });
});

describe("Headscale control node firewall", () => {
  const open = (plan: ReturnType<typeof headscaleFirewallPlan>) =>
    plan.inbound.filter((r) => r.sourceAddresses?.includes("0.0.0.0/0") && r.portRange !== undefined).map((r) => `${r.portRange}/${r.protocol}`).sort();

  test("only 80 and 443 open to the internet, plus 3478/udp with DERP", () => {
    assert.deepEqual(open(headscaleFirewallPlan({ tag: "hm-prod-headscale", derp: false })), ["443/tcp", "80/tcp"]);
    assert.deepEqual(open(headscaleFirewallPlan({ tag: "hm-prod-headscale", derp: true })), ["3478/udp", "443/tcp", "80/tcp"]);
  });

  test("no inbound rule from anyone else, and only the control node's own tag", () => {
    const plan = headscaleFirewallPlan({ tag: "hm-prod-headscale", derp: true });
    assert.deepEqual(plan.tags, ["hm-prod-headscale"]);
    for (const r of plan.inbound) assert.equal(r.sourceTags, undefined);
    assert.throws(() => headscaleFirewallPlan({ tag: "bad tag", derp: false }), /not a DigitalOcean tag/);
  });
});

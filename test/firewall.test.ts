import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FORBIDDEN_INBOUND_PORTS, firewallPlans, type FirewallInput, type FirewallPlan, type FirewallRule, type NodeRole } from "../components/render/firewall";

const CLUSTER = "hm-prod";
const roleTag = (r: NodeRole): string => `hm-prod-${r}`;
const base: FirewallInput = {
  clusterTag: CLUSTER,
  roleTag,
  httpPort: 80,
  httpsPort: 443,
  federationPort: 8448,
  turn: { port: 3478, tlsPort: 5349, minPort: 49152, maxPort: 49251 },
  wireguardPort: 51820,
  tailscaleDirectPort: 41641,
};
const variants: [string, FirewallInput][] = [
  ["full", base],
  ["no TURN", { ...base, turn: undefined }],
  ["no Tailscale direct port", { ...base, tailscaleDirectPort: undefined }],
  ["wide relay range", { ...base, turn: { port: 3478, tlsPort: 5349, minPort: 55000, maxPort: 65000 } }],
];

// The test's own reading of DigitalOcean port ranges, independent of the module's.
function expand(rule: FirewallRule): Set<number> {
  const out = new Set<number>();
  if (rule.protocol === "icmp") return out;
  const text = rule.portRange ?? "all";
  let lo: number;
  let hi: number;
  if (text === "all" || text === "0") [lo, hi] = [1, 65535];
  else {
    const parts = text.split("-").map((p) => Number.parseInt(p, 10));
    assert.ok(parts.length <= 2 && parts.every((p) => Number.isInteger(p)), `unparsable range ${text}`);
    [lo, hi] = [parts[0], parts[1] ?? parts[0]];
  }
  for (let p = lo; p <= hi; p++) out.add(p);
  return out;
}

function forbiddenHits(plans: FirewallPlan[]): string[] {
  const hits: string[] = [];
  for (const plan of plans)
    for (const rule of plan.inbound) {
      const ports = expand(rule);
      for (const f of FORBIDDEN_INBOUND_PORTS) if (ports.has(f)) hits.push(`${plan.name} ${rule.protocol}/${f}`);
    }
  return hits;
}

describe("firewall plans", () => {
  test("the forbidden list holds the ports that must never be public", () => {
    for (const p of [22, 2375, 2376, 2377, 7946, 4789, 5432, 8080, 9000]) assert.ok(FORBIDDEN_INBOUND_PORTS.includes(p), `${p} missing`);
  });

  test("the checker itself catches a forbidden port inside a range, including 1-65535", () => {
    const rule = (portRange: string): FirewallRule => ({ protocol: "tcp", portRange, sourceAddresses: ["0.0.0.0/0"], reason: "x" });
    const plan = (r: FirewallRule): FirewallPlan[] => [{ name: "probe", tags: [], inbound: [r], outbound: [] }];
    assert.ok(forbiddenHits(plan(rule("1-65535"))).includes("probe tcp/22"));
    assert.ok(forbiddenHits(plan(rule("5000-6000"))).includes("probe tcp/5432"));
    assert.deepEqual(forbiddenHits(plan(rule("443"))), []);
  });

  for (const [name, input] of variants) {
    test(`${name}: no inbound rule covers a forbidden port`, () => {
      assert.deepEqual(forbiddenHits(firewallPlans(input)), []);
    });

    test(`${name}: every plan has explicit egress for tcp, udp and icmp to v4 and v6`, () => {
      for (const plan of firewallPlans(input)) {
        for (const proto of ["tcp", "udp", "icmp"] as const) {
          const rule = plan.outbound.find((r) => r.protocol === proto);
          assert.ok(rule, `${plan.name} has no ${proto} egress`);
          assert.deepEqual([...(rule.destinationAddresses ?? [])].sort(), ["0.0.0.0/0", "::/0"]);
          if (proto !== "icmp") assert.equal(expand(rule).size, 65535, `${plan.name} ${proto} egress is not all ports`);
        }
      }
    });

    test(`${name}: every rule has a reason, tcp/udp rules a port range, icmp none`, () => {
      for (const plan of firewallPlans(input))
        for (const rule of [...plan.inbound, ...plan.outbound]) {
          assert.ok(rule.reason.trim().length > 10, `${plan.name}: rule without a reason`);
          if (rule.protocol === "icmp") assert.equal(rule.portRange, undefined);
          else assert.match(rule.portRange ?? "", /^\d+(-\d+)?$/);
        }
    });

    test(`${name}: the WireGuard port is open only to the cluster tag`, () => {
      const plans = firewallPlans(input);
      const covering = plans.flatMap((p) => p.inbound.filter((r) => r.protocol === "udp" && expand(r).has(input.wireguardPort)));
      assert.equal(covering.length, 1);
      assert.deepEqual(covering[0].sourceTags, [CLUSTER]);
      assert.equal(covering[0].sourceAddresses, undefined);
      const owner = plans.find((p) => p.inbound.includes(covering[0]))!;
      assert.deepEqual(owner.tags, [CLUSTER]);
    });
  }

  test("edge: 80, 443 and 8448 over tcp from anywhere (v4 and v6), on the edge tag only", () => {
    const edge = firewallPlans(base).find((p) => p.tags.includes(roleTag("edge")))!;
    assert.ok(edge);
    for (const port of [80, 443, 8448]) {
      const rule = edge.inbound.find((r) => expand(r).has(port));
      assert.ok(rule, `port ${port}`);
      assert.equal(rule.protocol, "tcp");
      assert.deepEqual([...(rule.sourceAddresses ?? [])].sort(), ["0.0.0.0/0", "::/0"]);
    }
    assert.equal(edge.inbound.length, 3);
  });

  test("TURN: listener ports on tcp and udp; the relay range on udp only", () => {
    const turn = firewallPlans(base).find((p) => p.tags.includes(roleTag("turn")))!;
    for (const port of [3478, 5349]) {
      assert.deepEqual(turn.inbound.filter((r) => expand(r).has(port)).map((r) => r.protocol).sort(), ["tcp", "udp"]);
    }
    const relay = turn.inbound.filter((r) => expand(r).has(49152) || expand(r).has(49251));
    assert.equal(relay.length, 1);
    assert.equal(relay[0].protocol, "udp");
    assert.equal(relay[0].portRange, "49152-49251");
    // No tcp rule anywhere covers a relay port.
    for (const plan of firewallPlans(base))
      for (const r of plan.inbound.filter((x) => x.protocol === "tcp")) assert.ok(!expand(r).has(49200), `${plan.name} opens the relay range over tcp`);
    assert.equal(firewallPlans({ ...base, turn: undefined }).some((p) => p.tags.includes(roleTag("turn"))), false);
  });

  test("Tailscale's direct port is udp from anywhere, only when set", () => {
    const ts = firewallPlans(base).filter((p) => p.inbound.some((r) => expand(r).has(41641)));
    assert.equal(ts.length, 1);
    assert.equal(ts[0].inbound[0].protocol, "udp");
    assert.equal(firewallPlans({ ...base, tailscaleDirectPort: undefined }).some((p) => p.inbound.some((r) => expand(r).has(41641))), false);
  });

  test("plan names are unique and every plan applies to some tag", () => {
    const plans = firewallPlans(base);
    assert.equal(new Set(plans.map((p) => p.name)).size, plans.length);
    for (const p of plans) assert.ok(p.tags.length > 0);
  });

  test("a configuration that would expose a forbidden or mesh port is refused", () => {
    assert.throws(() => firewallPlans({ ...base, httpPort: 8080 }), /forbidden port\(s\) 8080/);
    assert.throws(() => firewallPlans({ ...base, federationPort: 22 }), /forbidden port\(s\) 22/);
    assert.throws(() => firewallPlans({ ...base, turn: { port: 3478, tlsPort: 5349, minPort: 2000, maxPort: 2400 } }), /2375, 2376, 2377/);
    assert.throws(() => firewallPlans({ ...base, turn: { port: 3478, tlsPort: 5349, minPort: 51000, maxPort: 52000 } }), /WireGuard port 51820/);
    assert.throws(() => firewallPlans({ ...base, tailscaleDirectPort: 51820 }), /WireGuard port 51820/);
    assert.throws(() => firewallPlans({ ...base, turn: { port: 3478, tlsPort: 5349, minPort: 49300, maxPort: 49200 } }), /reversed/);
    assert.throws(() => firewallPlans({ ...base, clusterTag: "bad tag!" }), /clusterTag/);
    assert.throws(() => firewallPlans({ ...base, wireguardPort: 70000 }), /wireguardPort/);
  });
});

describe("firewall plans without public ingress (ingress funnel)", () => {
  test("no inbound rule from anywhere: no edge plan, ICMP and the mesh only from the cluster's droplets", () => {
    const plans = firewallPlans({ ...base, turn: undefined, tailscaleDirectPort: undefined, publicIngress: false });
    assert.deepEqual(plans.map((p) => p.name), ["hm-prod-cluster"]);
    const inbound = plans.flatMap((p) => p.inbound);
    assert.deepEqual(inbound.filter((r) => (r.sourceAddresses ?? []).length > 0), []);
    assert.ok(inbound.every((r) => r.sourceTags?.length === 1 && r.sourceTags[0] === CLUSTER));
    assert.ok(plans[0]!.outbound.length > 0, "egress stays open (Tailscale's control plane and DERP are reached outwards)");
  });

  test("TURN ports, when explicitly opened, are the only public rules", () => {
    const plans = firewallPlans({ ...base, tailscaleDirectPort: undefined, publicIngress: false });
    assert.deepEqual(plans.filter((p) => p.inbound.some((r) => r.sourceAddresses)).map((p) => p.name), ["hm-prod-turn"]);
  });
});

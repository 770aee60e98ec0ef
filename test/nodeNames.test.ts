import assert from "node:assert/strict";
import { before, test } from "node:test";
import { RESERVED_NODE_NAMES } from "../components/settings";
import { planStack, type Plan } from "../plan/plan";
import { readStackConfig } from "../plan/stackConfig";
import { problemsFor, problemsOf } from "./support/settings";

// Which node names would give a node's resources the URN of another resource of the program?
// Derived from the real program's plan, not from a list: every resource named after a node is a
// template `<prefix><node><suffix>`; any other resource of the same type chain whose name fits the
// template with X in the node's place is what a node named X would collide with.

type Node = { name: string; size: string; roles: string[] };
const prodNodes = JSON.parse(readStackConfig("prod").values["hardened-matrix:nodes"]!) as Node[];
const CONTROL: Node = { name: "hm-prod-hs", size: "s-1vcpu-1gb", roles: ["headscale"] };
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** The engine's qualified type: the parents' types (not the stack's), then the resource's own. */
function typeChain(plan: Plan, urn: string): string {
  const byUrn = new Map(plan.resources.map((r) => [r.urn, r]));
  const chain: string[] = [];
  for (let r = byUrn.get(urn); r && r.type !== "pulumi:pulumi:Stack"; r = byUrn.get(r.parent)) chain.unshift(r.type);
  return chain.join("$");
}

function collidingNodeNames(plan: Plan, nodes: string[]): Set<string> {
  const found = new Set<string>();
  const resources = plan.resources.map((r) => ({ name: r.name, chain: typeChain(plan, r.urn) }));
  for (const r of resources) {
    for (const node of nodes) {
      for (const m of r.name.matchAll(new RegExp(`(?<=^|-)${node.replace(/[-]/g, "\\-")}(?=-|$)`, "g"))) {
        const prefix = r.name.slice(0, m.index);
        const suffix = r.name.slice(m.index + node.length);
        for (const o of resources) {
          if (o === r || o.chain !== r.chain || o.name.length <= prefix.length + suffix.length) continue;
          if (!o.name.startsWith(prefix) || !o.name.endsWith(suffix)) continue;
          const x = o.name.slice(prefix.length, o.name.length - suffix.length);
          if (DNS_LABEL.test(x) && !nodes.includes(x)) found.add(x);
        }
      }
    }
  }
  return found;
}

let headscale: Plan;
let tailscale: Plan;
before(async () => {
  headscale = await planStack("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": [...prodNodes, CONTROL] });
  assert.equal(headscale.error, undefined, String(headscale.error));
  tailscale = await planStack("prod", {});
  assert.equal(tailscale.error, undefined, String(tailscale.error));
});

const reserved = (vpn: string) => RESERVED_NODE_NAMES.filter((r) => r.vpn === vpn).map((r) => r.name).sort();

for (const vpn of ["headscale", "tailscale"] as const) {
  test(`vpn ${vpn}: settings refuse exactly the node names the program's resource names would collide with`, () => {
    const plan = vpn === "headscale" ? headscale : tailscale;
    const derived = [...collidingNodeNames(plan, prodNodes.map((n) => n.name))].sort();
    assert.deepEqual(reserved(vpn), derived);
  });
}

test("the derivation finds the Headscale deployer's key: a cluster node named admin", () => {
  assert.ok(collidingNodeNames(headscale, prodNodes.map((n) => n.name)).has("admin"));
});

test("a cluster node named admin is refused with vpn headscale, naming nodes[i].name; accepted with tailscale and as the control node", () => {
  const nodes = prodNodes.map((n, i) => (i === prodNodes.length - 1 ? { ...n, name: "admin" } : n));
  const i = prodNodes.length - 1;
  const problems = problemsFor("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": [...nodes, CONTROL] });
  assert.ok(
    problems.some((p) => p.startsWith(`hardened-matrix:nodes[${i}].name: "admin" would give this node's resources the name of the deployer's Headscale key`) && p.endsWith("allowed: any other DNS label")),
    problems.join("\n"),
  );
  assert.deepEqual(problemsOf("prod", { "hardened-matrix:nodes": nodes }), []);
  assert.deepEqual(problemsOf("prod", { "hardened-matrix:vpn": "headscale", "hardened-matrix:nodes": [...prodNodes, { ...CONTROL, name: "admin" }] }), []);
});

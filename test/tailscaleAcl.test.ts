import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ADMIN_GROUP, renderTailnetPolicy, type TailnetPolicyInput } from "../components/render/tailscaleAcl";
import { mayReach, matches, sshAction, type Device, type Policy } from "./support/tailnetPolicyEvaluator";

const input: TailnetPolicyInput = { admins: ["alice@example.com", "bob@example.com"], nodeTag: "tag:hm-node", adminPorts: [22, 9443], sshUsers: ["root"] };
const policy = JSON.parse(renderTailnetPolicy(input)) as Policy;

const alice: Device = { user: "alice@example.com", tags: [] };
const bob: Device = { user: "bob@example.com", tags: [] };
const mallory: Device = { user: "mallory@example.com", tags: [] };
const node: Device = { user: "alice@example.com", tags: ["tag:hm-node"] };
const otherNode: Device = { user: "bob@example.com", tags: ["tag:hm-node"] };
const strayTagged: Device = { user: "alice@example.com", tags: ["tag:other"] };

describe("tailnet policy", () => {
  test("admins reach nodes on the admin ports and nothing else", () => {
    assert.equal(mayReach(policy, alice, node, 22), true);
    assert.equal(mayReach(policy, bob, node, 9443), true);
    assert.equal(mayReach(policy, alice, node, 5432), false);
    assert.equal(mayReach(policy, alice, node, 2377), false);
  });

  test("nodes reach nothing of each other over the tailnet (they talk over the WireGuard mesh)", () => {
    for (const port of [22, 2377, 5432, 65535]) assert.equal(mayReach(policy, node, otherNode, port), false);
  });

  test("untagged non-admins, foreign tags and nodes-to-admins are denied", () => {
    assert.equal(mayReach(policy, mallory, node, 22), false);
    assert.equal(mayReach(policy, strayTagged, node, 22), false);
    assert.equal(mayReach(policy, node, alice, 22), false);
    assert.equal(mayReach(policy, alice, bob, 22), false, "nothing but the two rules: admins' own devices are not opened to each other");
  });

  test("the evaluator can say yes to what the policy must deny (a permissive policy)", () => {
    const open: Policy = { ...policy, acls: [{ action: "accept", src: ["*"], dst: ["*:*"] }] };
    assert.equal(mayReach(open, mallory, node, 5432), true);
  });

  test("Tailscale SSH: admins as the listed users only, action accept", () => {
    assert.equal(sshAction(policy, alice, node, "root"), "accept");
    assert.equal(sshAction(policy, alice, node, "postgres"), undefined);
    assert.equal(sshAction(policy, mallory, node, "root"), undefined);
    assert.equal(sshAction(policy, otherNode, node, "root"), undefined);
    const withAdminUser = JSON.parse(renderTailnetPolicy({ ...input, sshUsers: ["hmadmin"] })) as Policy;
    assert.equal(sshAction(withAdminUser, alice, node, "hmadmin"), "accept");
    assert.equal(sshAction(withAdminUser, alice, node, "root"), undefined);
  });

  test("groups, tag owners and the exact rule set", () => {
    assert.deepEqual(policy.groups, { [ADMIN_GROUP]: input.admins });
    assert.deepEqual(policy.tagOwners, { "tag:hm-node": [ADMIN_GROUP] });
    assert.equal(policy.acls?.length, 1);
    assert.equal(policy.ssh?.length, 1);
  });

  test("the policy's own tests (which Tailscale runs on every update) hold under the evaluator", () => {
    for (const variant of [input, { ...input, adminPorts: [22, 5432] }, { ...input, deployerTag: "tag:hm-ci" }]) {
      const p = JSON.parse(renderTailnetPolicy(variant)) as Policy;
      assert.ok((p.tests ?? []).length > 0);
      for (const t of p.tests ?? []) {
        const src: Device = t.src.startsWith("tag:") ? { tags: [t.src] } : { user: t.src, tags: [] };
        assert.ok((t.deny ?? []).length > 0, "a test must also assert a denial");
        for (const [list, expected] of [[t.accept ?? [], true], [t.deny ?? [], false]] as const) {
          for (const entry of list) {
            const cut = entry.lastIndexOf(":");
            const dst: Device = { tags: [entry.slice(0, cut)] };
            assert.equal(mayReach(p, src, dst, Number(entry.slice(cut + 1))), expected, `${t.src} -> ${entry}`);
          }
        }
      }
    }
  });

  test("a deployer tag (CI runners) reaches the nodes' SSH as root and nothing else; without it, nothing", () => {
    const withCi = JSON.parse(renderTailnetPolicy({ ...input, deployerTag: "tag:hm-ci" })) as Policy;
    const runner: Device = { tags: ["tag:hm-ci"] };
    assert.equal(mayReach(withCi, runner, node, 22), true);
    for (const port of [9443, 2377, 5432, 8008]) assert.equal(mayReach(withCi, runner, node, port), false, `port ${port}`);
    assert.equal(mayReach(withCi, runner, alice, 22), false, "not admins' devices");
    assert.equal(mayReach(withCi, node, runner, 22), false, "nodes cannot reach back into the runner");
    assert.equal(sshAction(withCi, runner, node, "root"), "accept");
    assert.equal(sshAction(withCi, runner, node, "postgres"), undefined);
    assert.deepEqual(withCi.tagOwners?.["tag:hm-ci"], [ADMIN_GROUP], "only admins may mint keys carrying it");
    assert.equal(mayReach(policy, runner, node, 22), false, "no deployer tag configured: runners are strangers");
    assert.throws(() => renderTailnetPolicy({ ...input, deployerTag: "hm-ci" }), /deployerTag/);
    assert.throws(() => renderTailnetPolicy({ ...input, deployerTag: "tag:hm-node" }), /differ from the node tag/);
  });

  test("invalid input is refused with a clear message", () => {
    assert.throws(() => renderTailnetPolicy({ ...input, admins: [] }), /admins is empty/);
    assert.throws(() => renderTailnetPolicy({ ...input, admins: ["not-an-email"] }), /not an email/);
    assert.throws(() => renderTailnetPolicy({ ...input, nodeTag: "hm-node" }), /tag:name/);
    assert.throws(() => renderTailnetPolicy({ ...input, adminPorts: [0] }), /not a port/);
    assert.throws(() => renderTailnetPolicy({ ...input, sshUsers: ["Root!"] }), /Unix user/);
  });

  test("rendering is deterministic JSON", () => {
    assert.equal(renderTailnetPolicy(input), renderTailnetPolicy({ ...input, adminPorts: [9443, 22] }));
  });
});

// nodeAttrs: a device gets every attr of every entry whose target selects it (Tailscale's policy
// syntax reference, "nodeAttrs"; the funnel attribute is tailcfg.NodeAttrFunnel = "funnel" in
// tailscale/tailscale v1.102.3 tailcfg/tailcfg.go).
function attrsOf(policy: Policy, d: Device): string[] {
  return (policy.nodeAttrs ?? []).filter((n) => n.target.some((t) => matches(policy, t, d))).flatMap((n) => n.attr);
}

describe("tailnet policy with a Funnel device", () => {
  const withFunnel = JSON.parse(renderTailnetPolicy({ ...input, funnelTag: "tag:hm-funnel" })) as Policy;
  const funnelDevice: Device = { user: "alice@example.com", tags: ["tag:hm-funnel"] };

  test("only the Funnel device's tag carries the funnel attribute", () => {
    assert.deepEqual(attrsOf(withFunnel, funnelDevice), ["funnel"]);
    for (const d of [node, otherNode, alice, mallory, strayTagged]) assert.deepEqual(attrsOf(withFunnel, d), [], JSON.stringify(d));
    assert.deepEqual(withFunnel.tagOwners?.["tag:hm-funnel"], [ADMIN_GROUP]);
  });

  test("the Funnel device reaches nothing on the tailnet and nothing reaches it", () => {
    for (const port of [22, 443, 8081, 9443]) {
      assert.equal(mayReach(withFunnel, funnelDevice, node, port), false);
      assert.equal(mayReach(withFunnel, alice, funnelDevice, port), false);
      assert.equal(mayReach(withFunnel, node, funnelDevice, port), false);
    }
    assert.equal(sshAction(withFunnel, alice, funnelDevice, "root"), undefined);
    assert.ok(withFunnel.tests?.[0]?.deny?.includes("tag:hm-funnel:443"));
  });

  test("without a Funnel device there are no node attributes; the tag must differ from the node tag", () => {
    assert.equal(policy.nodeAttrs, undefined);
    assert.deepEqual(attrsOf(policy, node), []);
    assert.throws(() => renderTailnetPolicy({ ...input, funnelTag: "tag:hm-node" }), /differ from nodeTag/);
    assert.throws(() => renderTailnetPolicy({ ...input, funnelTag: "funnel" }), /tag:name/);
  });
});

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import type { RecordedResource } from "../plan/mockRuntime";
import { engineSteps, planRecords, replaceKeys, stepIndex, type Step } from "./support/engineOrder";

// Replacing, adding and removing nodes, judged by the engine's own step order (modelled from
// pulumi/pulumi pkg/resource/deploy/step_generator.go in test/support/engineOrder.ts) over the
// prod plan: what is deleted, created and in which order.

const PROD_NODES = [
  { name: "hm-prod-1", size: "s-1vcpu-2gb", roles: ["manager", "edge"] },
  { name: "hm-prod-2", size: "s-2vcpu-4gb", roles: ["manager", "db"] },
  { name: "hm-prod-3", size: "s-1vcpu-2gb", roles: ["manager", "turn"] },
];
const WORKER = { name: "hm-prod-4", size: "s-1vcpu-2gb", roles: [] as string[] };

let prod: RecordedResource[];
let withWorker: RecordedResource[];
let withAnotherKey: RecordedResource[];

const urnOf = (plan: RecordedResource[], type: string, name: string): string => {
  const r = plan.find((x) => x.type === type && x.name === name);
  assert.ok(r, `the plan has a ${type} called ${name}`);
  return r.urn;
};
const show = (steps: Step[]): string => steps.filter((s) => s.op !== "same").map((s) => `${s.op} ${s.urn.split("::").pop()}${s.why ? ` (${s.why})` : ""}`).join("\n");
const touches = (steps: Step[], op: Step["op"], name: string): boolean => stepIndex(steps, op, name) >= 0;
const teardownName = (node: string): string => `cloud-swarm-${node}-teardown`;

describe("nodes in the engine's order", { timeout: 600_000 }, () => {
  before(() => {
    prod = planRecords("prod");
    withWorker = planRecords("prod", { "hardened-matrix:nodes": [...PROD_NODES, WORKER] });
    withAnotherKey = planRecords("prod", { "hardened-matrix:sshKeys": ["11:22:33:44", "55:66:77:88"] });
  });

  test("replacing a node's generation (README): a fresh join key, then the old node's teardown, its volume attachments and droplet are deleted, then the droplet is created", () => {
    const generation = urnOf(prod, "random:index/randomId:RandomId", "hm-prod-2-generation");
    const steps = engineSteps(prod, prod, { replace: [generation] });
    const i = (op: Step["op"], name: string): number => stepIndex(steps, op, name);
    const key = prod.find((r) => r.type === "tailscale:index/tailnetKey:TailnetKey" && r.name.endsWith("-hm-prod-2-key"));
    assert.ok(key, "hm-prod-2 has its own join key");
    const keyCreated = steps.findIndex((s) => s.op === "create" && s.urn === key.urn);
    const dropletCreated = i("create", "hm-prod-2");
    assert.ok(keyCreated >= 0 && keyCreated < dropletCreated, `a new key before the new droplet:\n${show(steps)}`);
    const droplet = prod.find((r) => r.type === "digitalocean:index/droplet:Droplet" && r.name === "hm-prod-2")!;
    assert.ok(droplet.options.propertyDependencies.userData?.includes(key.urn), "the droplet's user data carries that key");
    const teardown = i("delete", teardownName("hm-prod-2"));
    const attachments = ["hm-prod-postgres-attachment", "hm-prod-dendrite-attachment"].map((n) => i("delete", n));
    const dropletDeleted = i("delete", "hm-prod-2");
    assert.ok(teardown >= 0, `the teardown runs:\n${show(steps)}`);
    for (const a of attachments) assert.ok(teardown < a && a < dropletDeleted, `teardown, then detach, then delete:\n${show(steps)}`);
    assert.ok(dropletDeleted < dropletCreated, `the old droplet is gone before the new one exists:\n${show(steps)}`);
    for (const other of ["hm-prod-1", "hm-prod-3"]) {
      assert.ok(!touches(steps, "delete", other) && !touches(steps, "delete", teardownName(other)), `${other} is left alone:\n${show(steps)}`);
    }
  });

  test("even `pulumi up --replace <droplet>`: the old node is torn down and deleted before its replacement is created", () => {
    const steps = engineSteps(prod, prod, { replace: [urnOf(prod, "digitalocean:index/droplet:Droplet", "hm-prod-2")] });
    const teardown = stepIndex(steps, "delete", teardownName("hm-prod-2"));
    assert.ok(teardown >= 0, `the teardown runs:\n${show(steps)}`);
    assert.ok(teardown < stepIndex(steps, "delete", "hm-prod-2") && stepIndex(steps, "delete", "hm-prod-2") < stepIndex(steps, "create", "hm-prod-2"), show(steps));
    for (const other of ["hm-prod-1", "hm-prod-3"]) assert.ok(!touches(steps, "delete", teardownName(other)), `${other}'s teardown does not run:\n${show(steps)}`);
  });

  test("replacing the turn node: its TURN record follows the new address in place; no other node is touched", () => {
    const steps = engineSteps(prod, prod, { replace: [urnOf(prod, "random:index/randomId:RandomId", "hm-prod-3-generation")] });
    const teardown = stepIndex(steps, "delete", teardownName("hm-prod-3"));
    assert.ok(teardown >= 0 && teardown < stepIndex(steps, "delete", "hm-prod-3") && stepIndex(steps, "delete", "hm-prod-3") < stepIndex(steps, "create", "hm-prod-3"), show(steps));
    const record = steps.find((s) => s.urn.includes("dnsRecord:DnsRecord::") && s.urn.endsWith("a-turn.example.org"));
    assert.equal(record?.op, "update", show(steps));
    for (const other of ["hm-prod-1", "hm-prod-2"]) assert.ok(!touches(steps, "delete", other) && !touches(steps, "delete", teardownName(other)), `${other} is left alone:\n${show(steps)}`);
  });

  test("a node added later boots with a join key created in the same deployment (a key from the first deploy has expired)", () => {
    const steps = engineSteps(prod, withWorker);
    const droplet = withWorker.find((r) => r.type === "digitalocean:index/droplet:Droplet" && r.name === WORKER.name)!;
    assert.ok(stepIndex(steps, "create", WORKER.name) >= 0);
    // The key in its user data: created in this run, before the droplet (one hour is its whole life).
    const keys = (droplet.options.propertyDependencies.userData ?? []).filter((u) => u.includes("tailnetKey:TailnetKey"));
    assert.equal(keys.length, 1, "one join key in the new node's user data");
    const created = steps.findIndex((s) => s.op === "create" && s.urn === keys[0]);
    assert.ok(created >= 0 && created < stepIndex(steps, "create", WORKER.name), `the key is created in this deployment, before the droplet:\n${show(steps)}`);
    for (const n of PROD_NODES) assert.ok(!touches(steps, "delete", n.name) && !touches(steps, "create", n.name), `${n.name} is left alone`);
  });

  test("adding an SSH key replaces no droplet (ssh_keys is ForceNew; it applies to nodes created later)", () => {
    for (const d of withAnotherKey.filter((r) => r.type === "digitalocean:index/droplet:Droplet")) {
      const before = prod.find((r) => r.urn === d.urn)!;
      assert.notDeepEqual((before.inputs as { sshKeys: unknown }).sshKeys, (d.inputs as { sshKeys: unknown }).sshKeys, "the input did change");
      assert.deepEqual(replaceKeys(before, d), [], `${d.name} would be replaced`);
    }
    const steps = engineSteps(prod, withAnotherKey);
    const droplets = steps.filter((s) => s.urn.includes("droplet:Droplet::") && (s.op === "create" || s.op === "delete"));
    assert.deepEqual(droplets, [], show(steps));
  });

  test("a node removed from `nodes`: its teardown is deleted (runs) before its droplet, and no other node's teardown runs", () => {
    const steps = engineSteps(withWorker, prod);
    const teardown = stepIndex(steps, "delete", teardownName(WORKER.name));
    assert.ok(teardown >= 0 && teardown < stepIndex(steps, "delete", WORKER.name), show(steps));
    for (const n of PROD_NODES) assert.ok(!touches(steps, "delete", teardownName(n.name)), `${n.name}'s teardown does not run:\n${show(steps)}`);
  });
});

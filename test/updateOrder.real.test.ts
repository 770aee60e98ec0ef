import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { planStack } from "../plan/plan";
import { ROLE_LABEL_PREFIX } from "../components/platform/platform";
import { NODE_ROLES } from "../components/settings";
import { clusterSkipReason, NetnsCluster, type ClusterNode } from "./support/netnsCluster";
import { STACKS } from "./support/plan";
import type { Inputs } from "./support/planned";

// Issue 15, defect 20, judged by a real Swarm: one Debian dockerd in a network namespace of its own
// (test/support/netnsCluster.ts), a single-node swarm carrying every role, as the dev, funnel and local
// stacks' one node does and as prod's one edge node does for the edge services. Swarm's max-replicas
// filter counts the old task (swarmkit manager/scheduler/filter.go, moby/moby#40797): with start-first
// and maxReplicas 1 the new task stays Pending and the old one keeps serving. Then every update order
// and placement the program renders, for every service of every stack file (with a federation
// allowlist, so the gate is among them), must converge here.
//
// Test speed-ups that play no part in the scheduling filter: a 1 s healthcheck, no update delay, a
// 2 s monitor, a sleeping busybox task. Order, maxReplicas, replicas, parallelism, failure action and
// constraints are the rendered ones.

const skip = clusterSkipReason() ?? false;

interface Placement {
  order: "start-first" | "stop-first";
  maxReplicas?: number;
  replicas: number;
  parallelism: number;
  failureAction: string;
  constraints: string[];
}

/** What the scheduler and the updater see of a planned service. */
function placementOf(s: Inputs): Placement {
  return {
    order: s.updateConfig.order,
    maxReplicas: s.taskSpec.placement?.maxReplicas,
    replicas: s.mode.replicated.replicas,
    parallelism: s.updateConfig.parallelism,
    failureAction: s.updateConfig.failureAction,
    constraints: s.taskSpec.placement?.constraints ?? [],
  };
}

describe("update order against Swarm's max-replicas filter, on a real single-node swarm", { skip, timeout: 420_000 }, () => {
  let cluster: NetnsCluster;
  let node: ClusterNode;
  const rendered = new Map<string, { placement: Placement; services: string[] }>();
  let serial = 0;

  before(async () => {
    for (const stack of STACKS) {
      const plan = await planStack(stack, { "hardened-matrix:federationMode": "allowlist", "hardened-matrix:federationAllowlist": ["friend.org"] });
      assert.equal(plan.error, undefined, `${stack}: ${String(plan.error)}`);
      for (const r of plan.resources.filter((x) => x.type === "docker:index/service:Service")) {
        const s = r.inputs as Inputs;
        const p = placementOf(s);
        const key = JSON.stringify({ ...p, constraints: [...p.constraints].sort() });
        const entry = rendered.get(key) ?? { placement: p, services: [] };
        entry.services.push(`${stack}/${s.name}`);
        rendered.set(key, entry);
      }
    }
    assert.ok([...rendered.values()].some((e) => e.services.some((n) => n.endsWith("/federation-gate"))), "the federation gate was planned");

    cluster = await NetnsCluster.create({ nodes: [{ name: "hm-edge-1", vpcAddress: "10.231.0.2/24" }], lifetimeSeconds: 400 });
    node = cluster.node("hm-edge-1");
    await cluster.startEngines();
    await cluster.importTestImage("hm-busybox:1");
    await node.mustDocker(["tag", "hm-busybox:1", "hm-busybox:2"]);
    await node.mustDocker(["swarm", "init", "--advertise-addr", node.vpcIp, "--listen-addr", `${node.vpcIp}:2377`]);
    // The one node carries every role, as the single-node stacks' node does.
    const self = await node.mustDocker(["info", "--format", "{{.Swarm.NodeID}}"]);
    await node.mustDocker(["node", "update", ...NODE_ROLES.flatMap((r) => ["--label-add", `${ROLE_LABEL_PREFIX}${r}=true`]), self]);
  });

  after(() => {
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  async function createService(p: Placement): Promise<string> {
    const name = `svc${++serial}`;
    const args = [
      "service", "create", "--detach", "--no-resolve-image", "--name", name, "--endpoint-mode", "dnsrr",
      "--replicas", String(p.replicas),
      ...(p.maxReplicas !== undefined ? ["--replicas-max-per-node", String(p.maxReplicas)] : []),
      ...p.constraints.flatMap((c) => ["--constraint", c]),
      "--update-order", p.order, "--update-parallelism", String(p.parallelism), "--update-failure-action", p.failureAction,
      "--update-delay", "0s", "--update-monitor", "2s",
      "--rollback-order", p.order,
      "--health-cmd", "true", "--health-interval", "1s", "--health-retries", "3", "--health-start-period", "0s",
      "--stop-grace-period", "2s",
      "hm-busybox:1", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done",
    ];
    await node.mustDocker(args);
    await until(`${name} running`, 60_000, async () => (await tasks(name)).filter((t) => t.desired === "Running" && t.current.startsWith("Running")).length === p.replicas);
    return name;
  }

  interface Task {
    image: string;
    desired: string;
    current: string;
    error: string;
  }

  async function tasks(name: string): Promise<Task[]> {
    const out = await node.mustDocker(["service", "ps", "--no-trunc", "--format", "{{.Image}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}", name]);
    return out
      .split("\n")
      .filter(Boolean)
      .map((l) => {
        const [image, desired, current, error] = l.split("\t");
        return { image, desired, current, error: error ?? "" };
      });
  }

  async function updateState(name: string): Promise<string> {
    return node.mustDocker(["service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", name]);
  }

  async function until(what: string, ms: number, probe: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  test("the defect: start-first with maxReplicas 1 (the gate as rendered before) never starts the new task; the old one keeps serving", async () => {
    const name = await createService({ order: "start-first", maxReplicas: 1, replicas: 1, parallelism: 1, failureAction: "rollback", constraints: [`node.labels.${ROLE_LABEL_PREFIX}edge==true`] });
    await node.mustDocker(["service", "update", "--detach", "--no-resolve-image", "--image", "hm-busybox:2", name]);
    // Give the scheduler ample time: the new task is Pending with the filter's reason.
    await until(`${name}: new task pending`, 30_000, async () =>
      (await tasks(name)).some((t) => t.image === "hm-busybox:2" && t.current.startsWith("Pending") && /max replicas per node limit exceed/.test(t.error)),
    );
    await new Promise((r) => setTimeout(r, 10_000));
    const now = await tasks(name);
    assert.ok(now.some((t) => t.image === "hm-busybox:1" && t.desired === "Running" && t.current.startsWith("Running")), `the old task keeps running: ${JSON.stringify(now)}`);
    assert.ok(!now.some((t) => t.image === "hm-busybox:2" && t.current.startsWith("Running")), `the new task never ran: ${JSON.stringify(now)}`);
    assert.equal(await updateState(name), "updating");
    await node.mustDocker(["service", "rm", name]);
  });

  test("every update order and placement the program renders converges on one node", async () => {
    assert.ok(rendered.size > 0);
    for (const { placement, services } of rendered.values()) {
      const who = `${JSON.stringify(placement)} (${services.join(", ")})`;
      const name = await createService(placement);
      await node.mustDocker(["service", "update", "--detach", "--no-resolve-image", "--image", "hm-busybox:2", name]);
      await until(`${who}: update completed`, 90_000, async () => (await updateState(name)) === "completed");
      const now = await tasks(name);
      const running = now.filter((t) => t.desired === "Running");
      assert.equal(running.length, placement.replicas, who);
      assert.ok(running.every((t) => t.image === "hm-busybox:2" && t.current.startsWith("Running")), `${who}: ${JSON.stringify(now)}`);
      await node.mustDocker(["service", "rm", name]);
    }
  });
});

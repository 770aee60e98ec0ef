import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { localSwarmScript, STACK_LABEL } from "../components/platform/local";
import { clusterSkipReason, NetnsCluster, type ClusterNode } from "./support/netnsCluster";

// The local target on an engine that already runs a swarm, judged by a real Docker engine: one
// Debian dockerd in a network namespace of its own (test/support/netnsCluster.ts; the swarm listens
// on that namespace's loopback; no traffic leaves it). The init script runs as `pulumi up` runs it
// (sh, docker CLI). One hardened-matrix stack per swarm: a swarm of another stack, or unlabelled
// objects of our fixed names on a first deploy, are refused before anything is made.

const skip = clusterSkipReason();
const POOL = "10.231.0.0/16";

describe("the local target on a real engine that may already run a swarm", { skip, timeout: 420_000 }, () => {
  let cluster: NetnsCluster;
  let n1: ClusterNode;

  before(async () => {
    cluster = await NetnsCluster.create({ nodes: [{ name: "n1", vpcAddress: "10.110.0.2/24" }], lifetimeSeconds: 300 });
    await cluster.startEngines();
    n1 = cluster.node("n1");
  });

  after(() => {
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  const docker = async (args: string[]): Promise<{ code: number; out: string }> => {
    const r = await n1.docker(args);
    return { code: r.code ?? -1, out: `${r.stdout}${r.stderr}` };
  };
  /** The init command's script, run as the command provider runs it (`/bin/sh -c`), against the node's engine. */
  const init = async (stack: string, fresh: boolean): Promise<{ code: number; out: string }> => {
    const r = await n1.runScript(localSwarmScript(POOL, stack, fresh), { name: "local-init" });
    return { code: r.code ?? -1, out: `${r.stdout}${r.stderr}` };
  };
  const nodeId = async () => (await docker(["info", "--format", "{{.Swarm.NodeID}}"])).out.trim();
  const owner = async () => (await docker(["node", "inspect", "--format", `{{ index .Spec.Labels "${STACK_LABEL}" }}`, await nodeId()])).out.trim();
  const unlabel = async () => assert.equal((await docker(["node", "update", "--label-rm", STACK_LABEL, await nodeId()])).code, 0);

  test("a fresh engine becomes a swarm labelled for the stack; the same stack again is fine", async () => {
    const first = await init("local", true);
    assert.equal(first.code, 0, first.out);
    assert.equal((await docker(["info", "--format", "{{.Swarm.LocalNodeState}}"])).out.trim(), "active");
    assert.equal(await owner(), "local");
    // A destroyed and re-created `local` stack (its volumes were kept on purpose) deploys again.
    assert.equal((await docker(["volume", "create", "hardened-matrix-postgres"])).code, 0);
    const again = await init("local", true);
    assert.equal(again.code, 0, again.out);
  });

  test("a swarm that carries another hardened-matrix stack is refused, on a first deploy and on an update", async () => {
    for (const fresh of [true, false]) {
      const r = await init("other", fresh);
      assert.equal(r.code, 1, r.out);
      assert.match(r.out, /this swarm already carries hardened-matrix stack "local" \(node label hardened-matrix\.stack\)/);
      assert.equal(await owner(), "local", "the label is left alone");
    }
  });

  test("first deploy on an existing swarm: unlabelled objects of our names are refused, naming them; nothing is labelled", async () => {
    await unlabel();
    // Someone else's: a service named dendrite (its image need not exist for the object to), an overlay
    // network named edge; and the volume left from before.
    assert.equal((await docker(["network", "create", "--driver", "overlay", "edge"])).code, 0);
    const svc = await docker(["service", "create", "--detach", "--no-resolve-image", "--name", "dendrite", "--replicas", "0", "hm-absent:1"]);
    assert.equal(svc.code, 0, svc.out);
    const r = await init("local", true);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /this engine already has service dendrite, network edge, volume hardened-matrix-postgres, not made by stack "local"/);
    assert.match(r.out, new RegExp(`claim them: docker node update --label-add hardened-matrix\\.stack=local ${await nodeId()}`));
    assert.equal(await owner(), "", "not labelled");
  });

  test("an update of a stack deployed before the label existed claims the swarm; objects of other names never block", async () => {
    const r = await init("local", false);
    assert.equal(r.code, 0, r.out);
    assert.equal(await owner(), "local");
    await unlabel();
    for (const [kind, name] of [["service", "dendrite"], ["network", "edge"], ["volume", "hardened-matrix-postgres"]] as const) {
      assert.equal((await docker([kind, "rm", name])).code, 0);
    }
    assert.equal((await docker(["network", "create", "--driver", "overlay", "someone-elses"])).code, 0);
    const fresh = await init("local", true);
    assert.equal(fresh.code, 0, fresh.out);
    assert.equal(await owner(), "local");
  });
});

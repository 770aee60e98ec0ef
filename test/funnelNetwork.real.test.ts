import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { funnelSubnet } from "../components/render/funnel";
import { settingsFor } from "./support/settings";
import { clusterSkipReason, NetnsCluster } from "./support/netnsCluster";

// The Funnel network's fixed subnet (the last /24 of swarmAddressPool), judged by a real Docker
// engine in swarm mode with the pool as its default address pool: Swarm must accept the fixed range
// inside its own pool, and networks created without a subnet, before and after, must never get it.
// Traefik's funnel entrypoint trusts forwarded headers from exactly this range.

const skip = clusterSkipReason();

describe("Funnel network subnet on a real swarm", { skip, timeout: 240_000 }, () => {
  let cluster: NetnsCluster;
  const pool = settingsFor("funnel").swarmAddressPool;
  const subnet = funnelSubnet(pool);

  before(async () => {
    cluster = await NetnsCluster.create({ nodes: [{ name: "n1", vpcAddress: "10.110.0.2/24" }] });
    await cluster.startEngines();
    await cluster.node("n1").mustDocker(["swarm", "init", "--advertise-addr", "10.110.0.2", "--default-addr-pool", pool]);
  });

  after(() => {
    if (!cluster) return;
    cluster.teardown();
    assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
  });

  const subnetOf = async (name: string): Promise<string> =>
    cluster.node("n1").mustDocker(["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", name]);

  test("Swarm takes the pool's last /24 for the Funnel network, and hands out the pool's others to the rest", async () => {
    const n1 = cluster.node("n1");
    assert.equal(subnet, "10.20.255.0/24");
    // As the program creates them: the other overlays first (and ingress at init), then funnel, then more.
    for (const name of ["edge", "docker-api", "db"]) await n1.mustDocker(["network", "create", "-d", "overlay", "--opt", "com.docker.network.driver.mtu=1420", name]);
    await n1.mustDocker(["network", "create", "-d", "overlay", "--opt", "com.docker.network.driver.mtu=1420", "--subnet", subnet, "funnel"]);
    for (const name of ["gate", "backup", "later"]) await n1.mustDocker(["network", "create", "-d", "overlay", name]);
    assert.equal(await subnetOf("funnel"), subnet);
    const others = await Promise.all(["ingress", "edge", "docker-api", "db", "gate", "backup", "later"].map(subnetOf));
    for (const s of others) {
      assert.match(s, /^10\.20\.\d+\.0\/24$/, "inside the pool");
      assert.notEqual(s, subnet);
    }
    assert.equal(new Set(others).size, others.length);
    // Swarm does not refuse a second network that names the same subnet (seen with Debian 12's
    // engine): only the Funnel network names one, which test/funnel.test.ts checks over the plan.
  });
});

import assert from "node:assert/strict";
import { test } from "node:test";
import { exceptionLabels, hardenedServiceArgs, type HardenedServiceArgs } from "../components/hardening";

const base: HardenedServiceArgs = {
  serviceName: "svc",
  image: "example/app:1.2.3",
  user: "1000:1000",
  memoryLimitMb: 128,
  memoryReservationMb: 32,
  healthcheck: { test: ["app", "health"] },
  networkIds: ["net-id-edge"],
};

test("the baseline: all capabilities dropped, read-only root, non-root, limits, healthcheck, restart, rollback, log rotation", () => {
  const a = hardenedServiceArgs(base) as any;
  const c = a.taskSpec.containerSpec;
  assert.deepEqual(c.capDrops, ["ALL"]);
  assert.deepEqual(c.capAdds, []);
  assert.equal(c.readOnly, true);
  assert.equal(c.user, "1000:1000");
  assert.deepEqual(c.healthcheck.tests, ["CMD", "app", "health"]);
  assert.equal(a.taskSpec.resources.limits.memoryBytes, 128 * 1024 * 1024);
  assert.equal(a.taskSpec.resources.reservation.memoryBytes, 32 * 1024 * 1024);
  assert.equal(a.taskSpec.restartPolicy.condition, "any");
  assert.equal(a.taskSpec.restartPolicy.delay, "10s");
  assert.equal(a.updateConfig.failureAction, "rollback");
  assert.deepEqual(a.taskSpec.logDriver, { name: "json-file", options: { "max-size": "10m", "max-file": "3" } });
  assert.deepEqual(a.labels, []);
});

test("exceptions are named with their reason in labels, and nothing else deviates", () => {
  const a = hardenedServiceArgs({ ...base, capAdd: [{ capability: "NET_BIND_SERVICE", reason: "binds 443" }], writableRootReason: "writes its cache" }) as any;
  assert.deepEqual(a.taskSpec.containerSpec.capAdds, ["NET_BIND_SERVICE"]);
  assert.equal(a.taskSpec.containerSpec.readOnly, false);
  assert.deepEqual(exceptionLabels({ ...base, capAdd: [{ capability: "NET_BIND_SERVICE", reason: "binds 443" }] }), {
    "hardened-matrix.exception.cap-add.NET_BIND_SERVICE": "binds 443",
  });
});

test("refuses root without a reason, an unpinned image, a capability without a reason, and secrets in env", () => {
  assert.throws(() => hardenedServiceArgs({ ...base, user: "0:0" }), /runs as root without a rootReason/);
  assert.throws(() => hardenedServiceArgs({ ...base, user: "app" }), /numeric uid:gid/);
  assert.throws(() => hardenedServiceArgs({ ...base, image: "example/app:latest" }), /not pinned/);
  assert.throws(() => hardenedServiceArgs({ ...base, image: "example/app" }), /not pinned/);
  assert.throws(() => hardenedServiceArgs({ ...base, capAdd: [{ capability: "CHOWN", reason: " " }] }), /needs a reason/);
  assert.throws(() => hardenedServiceArgs({ ...base, env: { DB_PASSWORD: "x" } }), /looks like a secret/);
  assert.doesNotThrow(() => hardenedServiceArgs({ ...base, env: { DB_PASSWORD_FILE: "/run/secrets/pw" } }));
  assert.throws(() => hardenedServiceArgs({ ...base, memoryReservationMb: 256 }), /reservation above the limit/);
});

test("a tmpfs without a mode is usable by the non-root user: world-writable and sticky (Swarm mounts it root-owned)", () => {
  const a = hardenedServiceArgs({ ...base, tmpfs: [{ target: "/tmp", sizeMb: 8 }, { target: "/run", sizeMb: 1, mode: 0o1777 }] }) as any;
  const modes = a.taskSpec.containerSpec.mounts.map((m: any) => [m.target, m.tmpfsOptions.mode]);
  assert.deepEqual(modes, [
    ["/tmp", 0o1777],
    ["/run", 0o1777],
  ]);
});

test("networks are attached by id, never by name; a host-network service joins host alone", () => {
  const a = hardenedServiceArgs({ ...base, networkIds: ["id-a", "id-b"], aliases: ["svc"] }) as any;
  assert.deepEqual(a.taskSpec.networksAdvanceds, [
    { id: "id-a", aliases: ["svc"] },
    { id: "id-b", aliases: ["svc"] },
  ]);
  const host = hardenedServiceArgs({ ...base, networkIds: [], hostNetworkReason: "relays a port range" }) as any;
  assert.deepEqual(host.taskSpec.networksAdvanceds, [{ name: "host" }]);
  assert.throws(() => hardenedServiceArgs({ ...base, hostNetworkReason: "relays a port range" }), /host-network service joins no other network/);
});

test("updates: converge or fail, with a timeout from the service's own health and grace numbers; start-first never gets maxReplicas 1", () => {
  const a = hardenedServiceArgs({ ...base, healthcheck: { test: ["app"], startPeriodSeconds: 60, intervalSeconds: 10, retries: 3, timeoutSeconds: 5 }, stopGracePeriodSeconds: 60 }) as any;
  // stop grace 60 + start 60 + 3 x (10 + 5) + monitor 30 + delay 10, and the pull allowance.
  assert.ok(Number(a.convergeConfig.timeout.replace(/s$/, "")) >= 60 + 60 + 45 + 30 + 10 + 120, a.convergeConfig.timeout);
  const slower = hardenedServiceArgs({ ...base, healthcheck: { test: ["app"], startPeriodSeconds: 600 } }) as any;
  assert.ok(Number(slower.convergeConfig.timeout.replace(/s$/, "")) > Number(a.convergeConfig.timeout.replace(/s$/, "")));
  assert.equal(a.taskSpec.placement.maxReplicas, 1);
  assert.equal(a.updateConfig.order, "stop-first");
  const startFirst = hardenedServiceArgs({ ...base, updateOrder: "start-first" }) as any;
  assert.equal(startFirst.taskSpec.placement.maxReplicas, undefined);
  assert.equal(startFirst.updateConfig.order, "start-first");
  assert.equal(startFirst.rollbackConfig.order, "start-first");
});

import assert from "node:assert/strict";
import { before, test } from "node:test";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { EXCEPTION_LABEL_PREFIX } from "../components/hardening";
import { ROLE_LABEL_PREFIX } from "../components/platform/platform";
import { DROPLET_SIZES } from "../components/settings";
import { planStack, type PlannedResource } from "../plan/plan";
import { parse } from "yaml";
import { DROPLET, firewallsOf, ofType, RECORD, runcmd } from "./support/cloud";
import { planToDisk, ROOT, STACKS } from "./support/plan";

// Cross-cutting invariants over every resource of every stack file, planned by the real CLI.
type Inputs = Record<string, any>;
// The complete list of hardening exceptions. A new one must be added here, on purpose.
const EXPECTED_EXCEPTIONS: Record<string, string[]> = {
  coturn: ["cap-add.NET_BIND_SERVICE", "host-network"],
};

for (const stack of STACKS) {
  const plan = planToDisk(stack);
  const services = plan.resources.filter((r) => r.type === "docker:index/service:Service");

  // The hardening baseline itself is the policy pack's (policy/policies.ts, run over every plan by
  // test/policy.test.ts). What stays here: whether an input is secret (a policy cannot see it) and
  // this program's own conventions.
  test(`${stack}: no secret value in a service's env or labels; networks attached by id; tmpfs writable by the service's user`, () => {
    assert.ok(services.length >= 2, "no services planned");
    for (const r of services) {
      const s = r.inputs as Inputs;
      const who = `${stack}/${s.name}`;
      const c = s.taskSpec.containerSpec;
      for (const [key, value] of Object.entries(c.env ?? {})) assert.notEqual(value, "[secret]", `${who}: a secret value in env ${key}`);
      for (const l of s.labels ?? []) assert.notEqual(l.value, "[secret]", `${who}: a secret value in label ${l.label}`);
      // Attached by the network resources' ids: Swarm stores ids, so a name would differ on every plan.
      const onHost = s.taskSpec.networksAdvanceds.some((n: Inputs) => n.name === "host");
      const networkIds = new Set(plan.resources.filter((n) => n.type === "docker:index/network:Network").map((n) => n.id));
      for (const n of s.taskSpec.networksAdvanceds) {
        if (onHost) {
          assert.deepEqual(s.taskSpec.networksAdvanceds, [{ name: "host" }], `${who}: host network and nothing else`);
          continue;
        }
        assert.equal(n.name, undefined, `${who}: network attached by name ${n.name}`);
        assert.ok(networkIds.has(n.id), `${who}: network ${n.id} is not the id of a planned docker network`);
      }
      for (const m of c.mounts ?? []) {
        if (m.type === "tmpfs") assert.equal(m.tmpfsOptions.mode & 0o1777, 0o1777, `${who}: tmpfs ${m.target} not writable by a non-root user`);
      }
    }
  });

  test(`${stack}: the hardening exceptions are exactly the expected ones`, () => {
    for (const r of services) {
      const s = r.inputs as Inputs;
      const exceptions = (s.labels ?? [])
        .map((l: Inputs) => String(l.label))
        .filter((l: string) => l.startsWith(EXCEPTION_LABEL_PREFIX))
        .map((l: string) => l.slice(EXCEPTION_LABEL_PREFIX.length))
        .sort();
      assert.deepEqual(exceptions, EXPECTED_EXCEPTIONS[s.name] ?? [], `${stack}/${s.name}`);
    }
  });

  test(`${stack}: only Traefik (and TURN, on its own ports) publish ports`, () => {
    const published = services.filter((r) => (r.inputs as Inputs).endpointSpec?.ports?.length).map((r) => (r.inputs as Inputs).name);
    for (const name of published) assert.ok(["traefik", "coturn"].includes(name), `${stack}: ${name} publishes ports`);
  });

  test(`${stack}: secrets are redacted leaf by leaf in resources.json and outputs.json`, () => {
    const text = JSON.stringify(plan.resources) + JSON.stringify(plan.outputs);
    assert.doesNotMatch(text, /mock-secret-for-/, "a secure config placeholder leaked");
    const secrets = plan.resources.filter((x) => x.type === "docker:index/secret:Secret");
    assert.ok(secrets.length >= 4, "the stack's generated secrets reach services as Swarm secrets");
    for (const r of secrets) {
      assert.equal((r.inputs as Inputs).data, "[secret]", `${r.name}: data not redacted`);
      assert.notEqual((r.inputs as Inputs).name, "[secret]", `${r.name}: the name is not secret and must stay readable`);
    }
  });

  // Protection is the pack's volume-protected; retainOnDelete is not sent to policies, so it is checked here.
  test(`${stack}: every volume is retained on delete`, () => {
    const volumes = plan.resources.filter((r) => r.type === "digitalocean:index/volume:Volume" || r.type === "docker:index/volume:Volume");
    assert.ok(volumes.length > 0);
    for (const v of volumes) assert.ok(v.options.retainOnDelete, `${stack}/${v.name}`);
  });

  const droplets = ofType(plan, DROPLET);
  if (droplets.length > 0) {
    // No forbidden inbound port: the pack's firewall-no-forbidden-port.
    test(`${stack}: every node has outbound rules`, () => {
      for (const d of droplets) {
        const name = (d.inputs as Inputs).name;
        const outbound = firewallsOf(plan, name).flatMap((f) => (f.inputs as Inputs).outboundRules as Inputs[]);
        assert.deepEqual([...new Set(outbound.map((r) => r.protocol))].sort(), ["icmp", "tcp", "udp"], `${stack}/${name}: outbound`);
      }
    });

    test(`${stack}: every node's user data is secret, never replaces it, blocks the metadata service and sets no-new-privileges`, () => {
      for (const d of droplets) {
        const name = String((d.inputs as Inputs).name);
        assert.equal((d.inputs as Inputs).userData, "[secret]", `${stack}/${name}: user data in plain text`);
        assert.ok(d.options.ignoreChanges.includes("userData"), `${stack}/${name}: a user-data edit would replace the node`);
        const text = plan.files.get(`${name}/user-data.yaml`);
        assert.ok(text, `${stack}/${name}: no user data file`);
        assert.match(text, /^#cloud-config\n/);
        const doc = parse(text) as Inputs;
        const file = (path: string): string => String((doc.write_files as Inputs[]).find((w) => w.path === path)?.content ?? "");
        assert.equal(JSON.parse(file("/etc/docker/daemon.json") || "{}")["no-new-privileges"], true, `${stack}/${name}: no-new-privileges`);
        assert.match(file("/usr/local/sbin/hm-metadata-block"), /-I DOCKER-USER 1 -d 169\.254\.169\.254\/32 -j REJECT/, `${stack}/${name}: metadata block`);
        assert.match(runcmd(doc), /systemctl enable --now hm-metadata-block\.service\niptables -w -C DOCKER-USER -d 169\.254\.169\.254\/32 -j REJECT\n/, `${stack}/${name}: metadata block enabled and checked`);
      }
    });

    test(`${stack}: public DNS records are not proxied by Cloudflare`, () => {
      for (const r of ofType(plan, RECORD)) {
        const i = r.inputs as Inputs;
        if (i.type === "A" || i.type === "AAAA" || i.type === "CNAME") assert.equal(i.proxied, false, `${stack}/${i.name}`);
      }
    });
  }
}

// ---- Day 2: what the provider and Swarm do when a service, a network or a volume changes ----

/**
 * Provider schema facts, as data, with their evidence. `uniqueName`: the resource's `name` is unique
 * in the Swarm, so a create-before-delete replacement collides with the resource it replaces.
 */
const FORCE_NEW: Record<string, { fields: string[]; uniqueName: boolean; evidence: string }> = {
  "docker:index/network:Network": {
    // Every attribute: name, labels, driver, options, internal, attachable, ingress, ipv6, ipam_*.
    fields: ["name", "labels", "driver", "options", "internal", "attachable", "ingress", "ipv6", "ipamDriver", "ipamOptions", "ipamConfigs"],
    uniqueName: true,
    evidence: "kreuzwerker/terraform-provider-docker internal/provider/resource_docker_network.go",
  },
  "docker:index/service:Service": {
    fields: ["name", "taskSpec.networksAdvanceds"],
    uniqueName: true,
    evidence: "kreuzwerker/terraform-provider-docker internal/provider/resource_docker_service.go (name; networks_advanced name/id/aliases)",
  },
  "digitalocean:index/volume:Volume": {
    fields: ["region", "name", "description", "snapshotId", "initialFilesystemType", "initialFilesystemLabel"],
    uniqueName: false,
    evidence: "digitalocean/terraform-provider-digitalocean digitalocean/volume/resource_volume.go",
  },
};
/** ForceNew fields of a protected volume that only describe it: they must never replace it. */
const DESCRIPTIVE_ONLY = new Set(["description"]);

/** "1m30s", "45s", "7s" as seconds (Go duration syntax, the units the provider accepts). */
function durationSeconds(d: string | undefined, fallback: number): number {
  if (d === undefined) return fallback;
  const m = /^(?:(\d+)m)?(?:(\d+)s)?$/.exec(d);
  assert.ok(m && (m[1] || m[2]), `unparsable duration ${d}`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
}

interface NodeFacts {
  name: string;
  memoryMb: number;
  labels: Set<string>;
  manager: boolean;
}

/** The nodes a stack file declares (the local target: one engine, the memory from settings). */
function nodesOf(stack: string): NodeFacts[] {
  const config = (parse(readFileSync(path.join(ROOT, `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> }).config;
  const nodes = config["hardened-matrix:nodes"] as { name: string; size: keyof typeof DROPLET_SIZES; roles: string[] }[] | undefined;
  if (config["hardened-matrix:target"] === "local" || !nodes) {
    const project = parse(readFileSync(path.join(ROOT, "Pulumi.yaml"), "utf8")) as { config: Record<string, { default?: unknown }> };
    const memoryMb = Number(config["hardened-matrix:nodeMemoryMb"] ?? (project.config["nodeMemoryMb"] ?? project.config["hardened-matrix:nodeMemoryMb"]).default);
    return [{ name: "local", memoryMb, labels: new Set(["manager", "edge", "db", "turn"]), manager: true }];
  }
  return nodes.map((n) => ({ name: n.name, memoryMb: DROPLET_SIZES[n.size].memoryMb, labels: new Set(n.roles), manager: n.roles.includes("manager") }));
}

/** The nodes a service's constraints allow (only the constraint forms this program writes). */
function eligible(nodes: NodeFacts[], constraints: string[] | undefined): NodeFacts[] {
  return nodes.filter((n) =>
    (constraints ?? []).every((c) => {
      if (c === "node.role==manager") return n.manager;
      const role = new RegExp(`^node\\.labels\\.${ROLE_LABEL_PREFIX.replace(/\./g, "\\.")}([a-z]+)==true$`).exec(c);
      assert.ok(role, `a constraint this test cannot evaluate: ${c}`);
      return n.labels.has(role[1]);
    }),
  );
}

/** Memory the node keeps for itself: the kernel, dockerd and containerd, tailscaled, sshd, journald. */
const SYSTEM_RESERVE_MB = 384;

/** Every stack file as written, and with a federation allowlist (the only way the federation gate is planned). */
const dayTwoPlans: { label: string; stack: string; resources: PlannedResource[] }[] = [];
before(async () => {
  for (const stack of STACKS) {
    for (const allowlist of [false, true]) {
      const overrides: Record<string, unknown> = allowlist ? { "hardened-matrix:federationMode": "allowlist", "hardened-matrix:federationAllowlist": ["friend.org"] } : {};
      const plan = await planStack(stack, overrides);
      assert.equal(plan.error, undefined, `${stack}: ${String(plan.error)}`);
      dayTwoPlans.push({ label: allowlist ? `${stack}+allowlist` : stack, stack, resources: plan.resources });
    }
  }
});

test("every stack: a service's update ends converged or fails the up (convergeConfig covers its own start period, checks, grace, monitor and delay)", () => {
  for (const { label, resources } of dayTwoPlans) {
    for (const r of resources.filter((x) => x.type === "docker:index/service:Service")) {
      const s = r.inputs as Inputs;
      const who = `${label}/${s.name}`;
      assert.ok(s.convergeConfig, `${who}: no convergeConfig: \`pulumi up\` returns when Swarm accepts the spec, before a rollback`);
      const h = s.taskSpec.containerSpec.healthcheck;
      const needed =
        durationSeconds(s.taskSpec.containerSpec.stopGracePeriod, 10) +
        durationSeconds(h.startPeriod, 0) +
        h.retries * (durationSeconds(h.interval, 30) + durationSeconds(h.timeout, 30)) +
        durationSeconds(s.updateConfig.monitor, 5) +
        durationSeconds(s.updateConfig.delay, 0);
      const timeout = durationSeconds(s.convergeConfig.timeout, 180);
      assert.ok(timeout >= needed + 60, `${who}: converge timeout ${timeout}s leaves under a minute for the pull over the ${needed}s the update itself may take`);
      assert.equal(s.updateConfig.failureAction, "rollback", who);
    }
  }
});

test("every stack: a start-first update can start its new task where the service may run (Swarm's max-replicas filter counts the old task)", () => {
  for (const { label, stack, resources } of dayTwoPlans) {
    const nodes = nodesOf(stack);
    for (const r of resources.filter((x) => x.type === "docker:index/service:Service")) {
      const s = r.inputs as Inputs;
      const who = `${label}/${s.name}`;
      const where = eligible(nodes, s.taskSpec.placement?.constraints);
      assert.ok(where.length > 0, `${who}: no node satisfies ${s.taskSpec.placement?.constraints}`);
      const max = s.taskSpec.placement?.maxReplicas as number | undefined;
      const replicas = s.mode.replicated.replicas as number;
      // During a start-first update the old and the new task are both desired running.
      const during = s.updateConfig.order === "start-first" ? replicas + s.updateConfig.parallelism : replicas;
      if (max !== undefined) {
        assert.ok(max * where.length >= during, `${who}: ${s.updateConfig.order} needs room for ${during} tasks, maxReplicas ${max} on ${where.length} eligible node(s) (${where.map((n) => n.name)}) allows ${max * where.length}`);
      }
    }
  }
});

test("every stack: a replacement forced by a ForceNew field never collides with a fixed Swarm name, nor replaces a protected volume for its prose", () => {
  for (const { label, resources } of dayTwoPlans) {
    const networks = new Map(resources.filter((r) => r.type === "docker:index/network:Network").map((r) => [r.id, r]));
    for (const r of resources) {
      const fact = FORCE_NEW[r.type];
      if (!fact) continue;
      const who = `${label}/${r.name}`;
      if (fact.uniqueName) {
        assert.equal(r.options.deleteBeforeReplace, true, `${who}: ${fact.fields.join(", ")} are ForceNew (${fact.evidence}) and the name is fixed: create-before-delete would collide`);
      }
      if (r.options.protect) {
        for (const field of fact.fields.filter((f) => DESCRIPTIVE_ONLY.has(f) && (r.inputs as Inputs)[f] !== undefined)) {
          assert.ok(r.options.ignoreChanges.includes(field), `${who}: ${field} is ForceNew (${fact.evidence}) on a protected resource: an edit of its text would ask to replace it`);
        }
      }
      if (r.type === "docker:index/service:Service") {
        // A service attached to a replaced network is replaced with it, before it (the engine deletes dependents first).
        for (const n of (r.inputs as Inputs).taskSpec.networksAdvanceds ?? []) {
          if (n.id) assert.ok(networks.get(n.id)?.options.deleteBeforeReplace, `${who}: attached to a network that is not deleted before its replacement`);
        }
      }
    }
  }
});

// Memory is planned "burstable": what Swarm schedules by (reservations) fits each node with room for the
// system, so every task can be placed and keeps its guaranteed share, including both tasks of a start-first
// update; limits cap each service alone and may add up to more than the node (on the 2 GB single-node
// stacks they do: the backup's restic, Postgres and Dendrite rarely peak together). README, "Memory".
test("every stack: the services placed on a node reserve no more memory than it has, and no limit exceeds it", () => {
  for (const { label, stack, resources } of dayTwoPlans) {
    const nodes = nodesOf(stack);
    const services = resources.filter((x) => x.type === "docker:index/service:Service").map((r) => r.inputs as Inputs);
    for (const node of nodes) {
      // A service that may run on several nodes is counted on each: it may land on any of them.
      const here = services.filter((s) => eligible(nodes, s.taskSpec.placement?.constraints).includes(node));
      const mb = (v: number | undefined): number => (v ?? 0) / 1024 / 1024;
      // During a start-first update the old and the new task both hold their reservation.
      const reserved = here.reduce((sum, s) => sum + mb(s.taskSpec.resources.reservation?.memoryBytes) * (s.updateConfig.order === "start-first" ? 2 : 1), 0);
      const usable = node.memoryMb - SYSTEM_RESERVE_MB;
      const list = here.map((s) => `${s.name} ${mb(s.taskSpec.resources.reservation?.memoryBytes)}`).join(", ");
      assert.ok(reserved <= usable, `${label}: node ${node.name} (${node.memoryMb} MB, ${usable} MB for services) reserves ${reserved} MB (${list})`);
      for (const s of here) {
        const limit = mb(s.taskSpec.resources.limits?.memoryBytes);
        assert.ok(limit > 0 && limit <= usable, `${label}: ${s.name}'s limit ${limit} MB on node ${node.name} (${usable} MB for services)`);
        assert.ok(mb(s.taskSpec.resources.reservation?.memoryBytes) > 0, `${label}: ${s.name} reserves nothing`);
      }
    }
  }
});

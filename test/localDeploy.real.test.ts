/**
 * The local stack deployed by the real Pulumi engine onto a real Docker engine: the engine runs the
 * real program; the simulated docker and command providers run in real mode (test/engine/sim/real/:
 * Engine API over the engine's unix socket, commands with DOCKER_HOST pointed at it). The engine is
 * a private dockerd in a network namespace of its own (test/support/netnsCluster.ts, one node); the
 * program's own init command makes it a single-node swarm. The images are the real programs under the
 * pinned names (test/images); the one difference of this machine the deploy adapts to is the kernel's
 * missing IPVS (services as DNS round-robin: test/e2e/deployed.ts ENDPOINT_MODE). Judged by the Docker engine and the
 * kernel: every service converges, the hardening is in force in the running containers, a second
 * `up` changes nothing, an unmapped input field is refused, and `destroy` removes everything but the
 * protected volumes.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, test } from "node:test";
import { DEFAULT_IMAGES, type ImageName } from "../components/settings";
import { builtEngine } from "./engine/harness";
import { makeProvider } from "./engine/sim/provider";
import { withRealMode } from "./engine/sim/real";
import { engineRun, type EngineRun } from "./e2e/deployed";
import { loadImages } from "./images/images";
import { clusterSkipReason, NetnsCluster, type ClusterNode } from "./support/netnsCluster";

const engine = builtEngine();
const skip = clusterSkipReason() ?? (engine ? undefined : "the Pulumi engine is not built here: run `npm run engine:build`");
if (!engine && process.env.CI) throw new Error("the Pulumi engine is not built: .ci/run builds it before npm test");

/** The services the local stack runs, with the image each uses. */
const SERVICES = {
  "socket-proxy": DEFAULT_IMAGES.socketProxy,
  traefik: DEFAULT_IMAGES.traefik,
  postgres: DEFAULT_IMAGES.postgres,
  coturn: DEFAULT_IMAGES.coturn,
  dendrite: DEFAULT_IMAGES.dendrite,
} as const;
/** The image each service runs, by its DEFAULT_IMAGES key. */
const IMAGE_KEYS: readonly ImageName[] = ["socketProxy", "traefik", "postgres", "coturn", "dendrite"];

type Run = EngineRun;

interface ContainerInspect {
  Id: string;
  Config: { User: string };
  HostConfig: { ReadonlyRootfs: boolean; CapAdd: string[] | null; CapDrop: string[] | null; PortBindings: Record<string, unknown> | null; Privileged: boolean };
  Mounts: Array<{ Type: string; Destination: string; RW: boolean }>;
}
interface ServiceInspect {
  ID: string;
  Spec: {
    Name: string;
    TaskTemplate: {
      ContainerSpec: {
        User?: string;
        ReadOnly?: boolean;
        CapabilityDrop?: string[];
        CapabilityAdd?: string[];
        Mounts?: Array<{ Type: string; Target: string; TmpfsOptions?: { SizeBytes?: number; Mode?: number } }>;
        Secrets?: Array<{ File: { Name: string; UID: string; GID: string; Mode: number } }>;
        Configs?: Array<{ File: { Name: string; UID: string; GID: string; Mode: number } }>;
      };
    };
  };
  Endpoint?: { Ports?: Array<{ PublishedPort?: number; TargetPort: number; PublishMode?: string }> };
}

describe("the local stack through the real engine onto a private Docker engine", { skip, timeout: 40 * 60_000 }, () => {
  let cluster: NetnsCluster;
  let n1: ClusterNode;
  let dir: string;
  let work: string;
  let firstUp: Run;

  before(async () => {
    cluster = await NetnsCluster.create({ nodes: [{ name: "n1", vpcAddress: "10.110.0.2/24" }], lifetimeSeconds: 35 * 60 });
    await cluster.startEngines();
    n1 = cluster.node("n1");
    // The program's socket proxy bind-mounts the engine's socket at its default path,
    // /var/run/docker.sock. This engine listens elsewhere, so the node's own /run (a private tmpfs)
    // links it there, in the group the stack's dockerSocketGid defaults to when the machine has no
    // socket (65200, README "Deploy to your local Docker engine").
    const link = await n1.exec(["sh", "-c", `chgrp 65200 ${n1.sock} && chmod 660 ${n1.sock} && ln -sf ${n1.sock} /run/docker.sock`], { timeoutMs: 10_000 });
    assert.equal(link.code, 0, link.stderr);
    work = mkdtempSync(path.join(tmpdir(), "hm-localdeploy-"));
    dir = path.join(work, "engine");
    // The real programs under the pinned names (test/images): built when missing, cached by version.
    const images = await loadImages(n1.dockerHost, [...IMAGE_KEYS]);
    const missing = images.filter((i) => !i.archive).map((i) => i.name);
    assert.deepEqual(missing, [], "every service's image is available here (test/images/build-images.sh)");
    firstUp = await engineRun(dir, n1.dockerHost, "up");
  });

  after(() => {
    if (cluster) {
      cluster.teardown();
      assert.deepEqual(cluster.leftovers(), [], "teardown leaves nothing behind");
    }
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const inspectJson = async <T>(args: string[]): Promise<T> => JSON.parse(await n1.mustDocker(args)) as T;
  const services = async (): Promise<ServiceInspect[]> => {
    const ids = (await n1.mustDocker(["service", "ls", "-q"])).split("\n").filter(Boolean);
    return ids.length === 0 ? [] : inspectJson<ServiceInspect[]>(["service", "inspect", ...ids]);
  };
  const containerOf = async (service: string): Promise<ContainerInspect> => {
    const id = (await n1.mustDocker(["ps", "-q", "--filter", `label=com.docker.swarm.service.name=${service}`])).split("\n")[0]!;
    assert.ok(id, `a running container of ${service}`);
    return (await inspectJson<ContainerInspect[]>(["inspect", id]))[0]!;
  };
  const execIn = async (containerId: string, argv: string[]) => {
    const r = await n1.docker(["exec", containerId, ...argv], { timeoutMs: 30_000 });
    return { code: r.code, out: `${r.stdout}${r.stderr}`.trim() };
  };

  test("`up` deploys the whole local stack; every service converges (its task running and healthy)", async () => {
    assert.equal(firstUp.status, 0, firstUp.out.slice(-6000));
    assert.ok((firstUp.summary?.create ?? 0) >= 30, JSON.stringify(firstUp.summary));
    const all = await services();
    assert.deepEqual(all.map((s) => s.Spec.Name).sort(), Object.keys(SERVICES).sort());
    for (const s of all) {
      const tasks = (await n1.mustDocker(["service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", s.ID])).split("\n");
      assert.equal(tasks.length, 1, `${s.Spec.Name}: ${tasks.join("; ")}`);
      assert.match(tasks[0]!, /^Running/, `${s.Spec.Name}: ${tasks[0]}`);
      const c = await containerOf(s.Spec.Name);
      const health = await n1.mustDocker(["inspect", "--format", "{{.State.Health.Status}}", c.Id]);
      assert.equal(health, "healthy", s.Spec.Name);
    }
    // The program's own init command made the engine a swarm labelled for the stack.
    assert.equal(await n1.mustDocker(["info", "--format", "{{.Swarm.LocalNodeState}}"]), "active");
    const node = await n1.mustDocker(["info", "--format", "{{.Swarm.NodeID}}"]);
    assert.equal(await n1.mustDocker(["node", "inspect", "--format", '{{ index .Spec.Labels "hardened-matrix.stack" }}', node]), "local");
  });

  test("the hardening is in force in every running container: non-root, read-only root, no capabilities but the named exception, tmpfs where written", async () => {
    assert.equal(firstUp.status, 0, "needs the deploy");
    for (const s of await services()) {
      const name = s.Spec.Name;
      const spec = s.Spec.TaskTemplate.ContainerSpec;
      const c = await containerOf(name);
      // The container as the engine made it from the spec the provider sent.
      assert.ok(spec.User && !/^0(:|$)|^root/.test(spec.User), `${name}: user ${spec.User}`);
      assert.equal(c.Config.User, spec.User, `${name}: container user`);
      assert.equal(c.HostConfig.ReadonlyRootfs, true, `${name}: read-only root`);
      assert.equal(c.HostConfig.Privileged, false, name);
      assert.deepEqual(c.HostConfig.CapDrop, ["ALL"], `${name}: cap drop`);
      assert.deepEqual(c.HostConfig.CapAdd ?? [], name === "coturn" ? ["NET_BIND_SERVICE"] : [], `${name}: cap add`);
      const tmpfs = (spec.Mounts ?? []).filter((m) => m.Type === "tmpfs");
      assert.ok(tmpfs.length > 0, `${name}: tmpfs`);
      for (const m of tmpfs) {
        assert.ok(c.Mounts.some((x) => x.Type === "tmpfs" && x.Destination === m.Target && x.RW), `${name}: tmpfs ${m.Target} mounted`);
        assert.ok((m.TmpfsOptions?.SizeBytes ?? 0) > 0, `${name}: tmpfs ${m.Target} bounded`);
      }
      // The kernel's word, from inside the running container.
      const [uid, gid] = spec.User!.split(":");
      assert.deepEqual(await execIn(c.Id, ["id", "-u"]), { code: 0, out: uid }, `${name}: uid`);
      assert.deepEqual(await execIn(c.Id, ["id", "-g"]), { code: 0, out: gid }, `${name}: gid`);
      const probe = await execIn(c.Id, ["touch", "/hm-probe"]);
      assert.notEqual(probe.code, 0, `${name}: the root filesystem took a write`);
      assert.match(probe.out, /Read-only file system/, name);
      const status = await execIn(c.Id, ["cat", "/proc/1/status"]);
      const capBnd = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status.out)?.[1];
      const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status.out)?.[1];
      // NET_BIND_SERVICE is capability 10 (linux/capability.h): 0x400.
      assert.equal(capBnd, name === "coturn" ? "0000000000000400" : "0000000000000000", `${name}: bounding set`);
      // Effective: nothing, but coTURN's turnserver, whose file capability (cap_net_bind_service+ep, as
      // upstream's coturn/coturn docker/coturn/debian/Dockerfile sets it) raises the one bounded cap.
      assert.equal(capEff, name === "coturn" ? "0000000000000400" : "0000000000000000", `${name}: effective set`);
      // Secrets and configs: the file modes and owners the spec asks for, as the container sees them.
      for (const f of [...(spec.Secrets ?? []), ...(spec.Configs ?? [])].map((x) => x.File)) {
        const st = await execIn(c.Id, ["stat", "-L", "-c", "%a %u %g", f.Name]);
        assert.deepEqual(st, { code: 0, out: `${f.Mode.toString(8)} ${f.UID} ${f.GID}` }, `${name}: ${f.Name}`);
      }
      for (const f of (spec.Secrets ?? []).map((x) => x.File)) {
        assert.equal(f.Mode, 0o400, `${name}: secret ${f.Name} readable by its owner only`);
        assert.equal(`${f.UID}:${f.GID}`, spec.User, `${name}: secret ${f.Name} owned by the service's user`);
      }
    }
  });

  test("only the rendered entry points are published (Traefik's 8080, 8443, 8448, host mode); no admin or socket-proxy port", async () => {
    assert.equal(firstUp.status, 0, "needs the deploy");
    const published = new Map<string, number[]>();
    for (const s of await services()) {
      const ports = (s.Endpoint?.Ports ?? []).map((p) => p.PublishedPort ?? 0);
      if (ports.length > 0) published.set(s.Spec.Name, ports.sort());
      for (const p of s.Endpoint?.Ports ?? []) assert.equal(p.PublishMode, "host", `${s.Spec.Name}:${p.PublishedPort} bypasses the ingress mesh`);
      const c = await containerOf(s.Spec.Name);
      const bound = Object.keys(c.HostConfig.PortBindings ?? {});
      if (s.Spec.Name !== "traefik") assert.deepEqual(bound, [], `${s.Spec.Name} publishes nothing`);
    }
    assert.deepEqual([...published.entries()], [["traefik", [8080, 8443, 8448]]]);
  });

  test("a second `up` changes nothing", async () => {
    assert.equal(firstUp.status, 0, "needs the deploy");
    const again = await engineRun(dir, n1.dockerHost, "up");
    assert.equal(again.status, 0, again.out.slice(-4000));
    const changes = Object.entries(again.summary ?? {}).filter(([k, v]) => k !== "same" && v > 0);
    assert.deepEqual(changes, [], JSON.stringify(again.summary));
  });

  test("a changed input: coTURN's config secret is replaced (a new one first) and the service updated in place onto it", async () => {
    assert.equal(firstUp.status, 0, "needs the deploy");
    const before = (await services()).find((s) => s.Spec.Name === "coturn")!;
    const inspectSecretNames = async () => (await n1.mustDocker(["secret", "ls", "--format", "{{.Name}}"])).split("\n").filter((n) => n.startsWith("coturn-config-"));
    const oldSecrets = await inspectSecretNames();
    assert.equal(oldSecrets.length, 1);
    const r = await engineRun(dir, n1.dockerHost, "up", "--set", "turnExternalIp=127.0.0.2");
    assert.equal(r.status, 0, r.out.slice(-4000));
    assert.deepEqual(r.summary, { replace: 1, same: 33, update: 1 });
    const after = (await services()).find((s) => s.Spec.Name === "coturn")! as ServiceInspect & { Version: { Index: number } };
    assert.equal(after.ID, before.ID, "updated in place, not re-created");
    const newSecrets = await inspectSecretNames();
    assert.equal(newSecrets.length, 1, "the old secret is removed once the service has moved off it");
    assert.notEqual(newSecrets[0], oldSecrets[0]);
    assert.deepEqual(
      (after.Spec.TaskTemplate.ContainerSpec.Secrets ?? []).map((s) => (s as unknown as { SecretName: string }).SecretName),
      newSecrets,
    );
    // The running task is the new spec's, and reads the new config.
    const c = await containerOf("coturn");
    assert.match((await execIn(c.Id, ["cat", "/etc/coturn/turnserver.conf"])).out, /external-ip=127\.0\.0\.2/);
  });

  test("strict: an input field the real mode does not map is refused, naming it, and nothing is made", async () => {
    process.env.HM_REAL_DOCKER_HOST = n1.dockerHost;
    try {
      const p = withRealMode(makeProvider("docker"));
      const urn = "urn:pulumi:local::hardened-matrix::docker:index/service:Service::strict-probe";
      const inputs = {
        name: "strict-probe",
        taskSpec: {
          containerSpec: { image: SERVICES.postgres, user: "70:70", privileges: { seLinuxContext: { disable: true } } },
        },
      };
      await assert.rejects(p.create!(urn, inputs), /input taskSpec\.containerSpec\.privileges is set but the real-mode docker provider does not map it/);
      const top = { name: "strict-probe", auth: { serverAddress: "registry.example", username: "u", password: "p" }, taskSpec: { containerSpec: { image: SERVICES.postgres } } };
      await assert.rejects(p.create!(urn, top), /input auth is set/);
      const net = { name: "strict-net", driver: "overlay", ipamConfigs: [{ subnet: "10.99.0.0/24", auxAddress: { a: "10.99.0.5" }, extra: "x" }] };
      await assert.rejects(p.create!("urn:pulumi:local::hardened-matrix::docker:index/network:Network::strict-net", net), /input ipamConfigs\[0\]\.extra is set/);
    } finally {
      delete process.env.HM_REAL_DOCKER_HOST;
    }
    assert.equal((await n1.mustDocker(["service", "ls", "-q", "--filter", "name=strict-probe"])), "");
    assert.equal((await n1.mustDocker(["network", "ls", "-q", "--filter", "name=strict-net"])), "");
  });

  test("`destroy` removes every service, network, secret and config; the protected data volumes are kept", async () => {
    assert.equal(firstUp.status, 0, "needs the deploy");
    const r = await engineRun(dir, n1.dockerHost, "destroy", "--exclude-protected");
    assert.equal(r.status, 0, r.out.slice(-4000));
    assert.equal(await n1.mustDocker(["service", "ls", "-q"]), "");
    assert.equal(await n1.mustDocker(["secret", "ls", "-q"]), "");
    assert.equal(await n1.mustDocker(["config", "ls", "-q"]), "");
    assert.equal(await n1.mustDocker(["ps", "-aq"]), "");
    const networks = (await n1.mustDocker(["network", "ls", "--format", "{{.Name}}"])).split("\n").sort();
    for (const n of ["edge", "docker-api", "db"]) assert.ok(!networks.includes(n), `network ${n} removed (left: ${networks.join(", ")})`);
    const volumes = (await n1.mustDocker(["volume", "ls", "--format", "{{.Name}}"])).split("\n").sort();
    assert.deepEqual(volumes, ["hardened-matrix-dendrite", "hardened-matrix-postgres"]);
  });
});

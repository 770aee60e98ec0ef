/**
 * The client scenario against the local stack as deployed: the real engine (test/engine/run.ts in real
 * mode) deploys the plan onto a private Docker engine in a network namespace of its own
 * (test/support/netnsCluster.ts) with the real programs' images (test/images); the client then runs
 * inside that namespace, where Traefik's published ports are, and talks to it over HTTPS.
 *
 * TLS: the local stack serves Traefik's self-signed default certificate (components/settings.ts: the
 * local target has no ACME), generated anew at every configuration change, naming no host of ours. The
 * client accepts exactly such a certificate (routeToLocalStack), at the namespace's own address only.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { X509Certificate } from "node:crypto";
import * as net from "node:net";
import * as tls from "node:tls";
import { Agent, buildConnector, fetch as undiciFetch } from "undici";
import type { ImageName } from "../../components/settings";
import { REPO } from "../engine/harness";
import { loadImages } from "../images/images";
import { NetnsCluster, type ClusterNode } from "../support/netnsCluster";

/** The local stack's names and ports (Pulumi.local.yaml). */
export const LOCAL = { serverName: "matrix.localhost", httpsPort: 8443, httpPort: 8080 } as const;

const SERVICES: readonly ImageName[] = ["socketProxy", "traefik", "postgres", "coturn", "dendrite"];

/**
 * This machine's kernel has no IPVS, so a service's virtual IP does not route; the real mode then
 * deploys the program's services as DNS round-robin (test/engine/sim/real/serviceSpec.ts). Droplets have IPVS.
 */
export const ENDPOINT_MODE = existsSync("/proc/net/ip_vs") || existsSync("/sys/module/ip_vs") ? undefined : "dnsrr";

export interface EngineRun {
  status: number;
  out: string;
  summary?: Record<string, number>;
  /** The stack's outputs after `up` (secrets masked). */
  outputs?: Record<string, unknown>;
}

/** One engine operation in its own process (test/engine/run.ts), bounded. */
export function engineRun(dir: string, dockerHost: string, op: string, ...args: string[]): Promise<EngineRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO, "test/engine/run.ts"), op, "--stack", "local", "--dir", dir, "--json", "--docker-host", dockerHost, ...args], {
      cwd: REPO,
      env: { ...process.env, PULUMI_CONFIG_PASSPHRASE: undefined, PULUMI_BACKEND_URL: undefined, PULUMI_ACCESS_TOKEN: undefined, DOCKER_HOST: dockerHost, HM_REAL_ENDPOINT_MODE: ENDPOINT_MODE },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15 * 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      const last = stdout.trim().split("\n").pop() ?? "";
      const parsed = last.startsWith("{") ? (JSON.parse(last) as { summary: Record<string, number>; outputs?: Record<string, unknown> }) : undefined;
      resolve({ status: code ?? -1, out: `${stdout}\n${stderr}`, summary: parsed?.summary, outputs: parsed?.outputs });
    });
  });
}

export interface DeployedStack {
  cluster: NetnsCluster;
  node: ClusterNode;
  /** The engine's state directory. */
  dir: string;
  up: EngineRun;
  /** Tears the namespace, its engine and the state down; returns what was left behind (nothing). */
  stop: () => string[];
}

/** A private engine, the real images loaded, and `up` of the local stack through the real engine. */
export async function deployLocalStack(log: (line: string) => void = () => undefined, lifetimeSeconds = 35 * 60): Promise<DeployedStack> {
  const cluster = await NetnsCluster.create({ nodes: [{ name: "n1", vpcAddress: "10.110.0.2/24" }], lifetimeSeconds });
  const work = mkdtempSync(path.join(tmpdir(), "hm-deployed-"));
  const stop = (): string[] => {
    cluster.teardown();
    rmSync(work, { recursive: true, force: true });
    return cluster.leftovers();
  };
  try {
    await cluster.startEngines();
    const node = cluster.node("n1");
    // The socket proxy bind-mounts /var/run/docker.sock: the node's private /run links this engine's
    // socket there, in the group the local stack's dockerSocketGid defaults to (65200) without one.
    const link = await node.exec(["sh", "-c", `chgrp 65200 ${node.sock} && chmod 660 ${node.sock} && ln -sf ${node.sock} /run/docker.sock`], { timeoutMs: 10_000 });
    if (link.code !== 0) throw new Error(`linking the engine socket: ${link.stderr}`);
    log("loading the real programs' images (test/images; built when missing)");
    const images = await loadImages(node.dockerHost, [...SERVICES]);
    const missing = images.filter((i) => !i.archive).map((i) => i.name);
    if (missing.length > 0) throw new Error(`images not available here: ${missing.join(", ")} (test/images/build-images.sh)`);
    log(`pulumi up of the local stack onto ${node.dockerHost}`);
    const dir = path.join(work, "engine");
    const up = await engineRun(dir, node.dockerHost, "up");
    return { cluster, node, dir, up, stop };
  } catch (e) {
    stop();
    throw e;
  }
}

/**
 * Traefik's generated default certificate: self-signed, CN "TRAEFIK DEFAULT CERT", one DNS name
 * `<32 hex>.<32 hex>.traefik.default` (traefik/traefik v3.7.13 pkg/tls/generate/generate.go). Traefik makes a
 * new one at every dynamic configuration change, not only at start (pkg/tls/tlsmanager.go UpdateConfigs ->
 * getDefaultCertificate), so a fingerprint pinned once breaks as soon as a task restarts or moves.
 * Returns why `raw` is not such a certificate, or undefined.
 */
export function notTraefikDefault(raw: Buffer): string | undefined {
  const c = new X509Certificate(raw);
  if (!/^CN=TRAEFIK DEFAULT CERT$/m.test(c.subject) || c.issuer !== c.subject) return `subject ${c.subject} / issuer ${c.issuer} is not Traefik's generated default`;
  if (!/^DNS:[0-9a-f]{32}\.[0-9a-f]{32}\.traefik\.default$/.test(c.subjectAltName ?? "")) return `names ${c.subjectAltName}, not <hex>.<hex>.traefik.default`;
  if (!c.verify(c.publicKey)) return "its self-signature does not verify";
  if (Date.parse(c.validTo) < Date.now() || Date.parse(c.validFrom) > Date.now() + 60_000) return `not valid now (${c.validFrom} - ${c.validTo})`;
  return undefined;
}

/**
 * Routes this process's fetch (the scenario's and matrix-js-sdk's) for `name` to `addr`, and for HTTPS
 * accepts exactly Traefik's generated default certificate (above) served there: the local stack has no
 * ACME, so nothing better can be verified; every other name is refused.
 */
export function routeToLocalStack(name: string, addr: string): void {
  const agent = new Agent({
    connect: (opts: buildConnector.Options, cb: buildConnector.Callback) => {
      if (opts.hostname !== name) return cb(new Error(`no address for ${opts.hostname} in this test (only ${name})`), null);
      const port = Number(opts.port || (opts.protocol === "https:" ? 443 : 80));
      if (opts.protocol !== "https:") {
        const s = net.connect({ host: addr, port }, () => cb(null, s));
        s.once("error", (e) => cb(e, null));
        return;
      }
      // The chain check is done by notTraefikDefault: Node's verifier cannot trust a certificate that changes.
      const s = tls.connect({ host: addr, port, servername: name, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] }, () => {
        const why = notTraefikDefault(s.getPeerCertificate().raw);
        if (why) {
          s.destroy();
          return cb(new Error(`${addr}:${port} served a certificate that ${why}`), null);
        }
        cb(null, s);
      });
      s.once("error", (e) => cb(e, null));
    },
  });
  globalThis.fetch = ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent })) as unknown as typeof fetch;
}

/** Every service of the stack restarted (a forced update: new tasks), each waited for until its task is healthy again. */
export async function restartServices(timeoutMs = 300_000): Promise<void> {
  const docker = (args: string[]) => {
    const r = spawnSync("docker", args, { encoding: "utf8", timeout: 120_000 });
    if (r.status !== 0) throw new Error(`docker ${args.join(" ")}: ${r.stderr || r.error?.message}`);
    return r.stdout.trim();
  };
  const names = docker(["service", "ls", "--format", "{{.Name}}"]).split("\n").filter(Boolean);
  for (const name of names) docker(["service", "update", "--force", "--detach", name]);
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    for (;;) {
      const ids = docker(["ps", "-q", "--filter", `label=com.docker.swarm.service.name=${name}`]).split("\n").filter(Boolean);
      const health = ids.length === 1 ? docker(["inspect", "--format", "{{.State.Health.Status}}", ids[0]!]) : "";
      const tasks = docker(["service", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", name]).split("\n");
      if (health === "healthy" && tasks.length === 1 && /^Running/.test(tasks[0]!)) break;
      if (Date.now() > deadline) throw new Error(`${name} is not running and healthy again within ${timeoutMs} ms: ${tasks.join("; ")} ${health}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

/**
 * Waits (bounded) until Traefik routes the client API: after a deploy or a restart its swarm provider
 * needs a poll (refreshSeconds) or a retry (the socket proxy not yet resolvable) before it has routers.
 */
export async function waitForRoutes(clientUrl: string, timeoutMs = 180_000): Promise<number> {
  const started = Date.now();
  let last = "";
  while (Date.now() - started < timeoutMs) {
    try {
      const r = await fetch(`${clientUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(5000) });
      if (r.status === 200) return Date.now() - started;
      last = `${r.status}`;
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  throw new Error(`${clientUrl}/_matrix/client/versions not routed within ${timeoutMs} ms (last: ${last})`);
}

/**
 * The client scenario against the local stack as deployed: the real engine (test/engine/run.ts in real
 * mode) deploys the plan onto a private Docker engine in a network namespace of its own
 * (test/support/netnsCluster.ts) with the real programs' images (test/images); the client then runs
 * inside that namespace, where Traefik's published ports are, and talks to it over HTTPS.
 *
 * TLS: the local stack serves Traefik's self-signed default certificate (components/settings.ts: the
 * local target has no ACME), generated anew at every Traefik start, naming no host of ours. The client
 * trusts exactly that certificate, pinned by its SHA-256 fingerprint after reading it once from the
 * served handshake (and re-pinned after a restart of Traefik); nothing else is trusted and verification
 * stays on for every other connection.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as tls from "node:tls";
import { Agent, fetch as undiciFetch } from "undici";
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
      const summary = last.startsWith("{") ? (JSON.parse(last) as { summary: Record<string, number> }).summary : undefined;
      resolve({ status: code ?? -1, out: `${stdout}\n${stderr}`, summary });
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

/** The SHA-256 fingerprint and PEM of the certificate served at addr:port for SNI `name` (read once, to pin). */
export function servedCertificate(addr: string, port: number, name: string, timeoutMs = 10_000): Promise<{ fingerprint256: string; pem: string }> {
  return new Promise((resolve, reject) => {
    // Verification is off for this one read only: what it returns is then pinned, and every request
    // afterwards verifies the chain against it and the fingerprint exactly.
    const s = tls.connect({ host: addr, port, servername: name, rejectUnauthorized: false, timeout: timeoutMs }, () => {
      const c = s.getPeerCertificate();
      s.end();
      if (!c.raw) return reject(new Error(`no certificate from ${addr}:${port}`));
      const b64 = c.raw.toString("base64").replace(/.{64}/g, "$&\n");
      resolve({ fingerprint256: c.fingerprint256, pem: `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n` });
    });
    s.on("error", reject);
    s.on("timeout", () => s.destroy(new Error(`TLS to ${addr}:${port}: no handshake within ${timeoutMs} ms`)));
  });
}

/**
 * Routes this process's fetch (the scenario's and matrix-js-sdk's) for `name` to `addr`, trusting for
 * HTTPS the certificate served there now, pinned. Returns a function that re-pins (after Traefik restarts).
 */
export async function pinStack(name: string, addr: string, httpsPort: number): Promise<() => Promise<string>> {
  let agent: Agent | undefined;
  const pin = async (): Promise<string> => {
    const cert = await servedCertificate(addr, httpsPort, name);
    const old = agent;
    agent = new Agent({
      connect: {
        // net.connect asks for all addresses (autoSelectFamily) or for one: answer in the form asked.
        lookup: ((host: string, opts: { all?: boolean }, cb: (...a: unknown[]) => void) => {
          if (host !== name) return cb(new Error(`no address for ${host} in this test`));
          return opts.all ? cb(null, [{ address: addr, family: 4 }]) : cb(null, addr, 4);
        }) as never,
        ca: cert.pem,
        checkServerIdentity: (_host, peer) => (peer.fingerprint256 === cert.fingerprint256 ? undefined : new Error(`certificate ${peer.fingerprint256} is not the pinned ${cert.fingerprint256}`)),
      },
    });
    void old?.close();
    return cert.fingerprint256;
  };
  await pin();
  globalThis.fetch = ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent })) as unknown as typeof fetch;
  return pin;
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

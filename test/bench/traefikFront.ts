import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parse, stringify } from "yaml";
import { ROOT, type PlanOnDisk } from "../support/plan";
import { planSwarm, swarmApiStandIn } from "../support/swarmApiStandIn";

/**
 * The real Traefik (test/images/build-traefik.sh) with the local plan's rendered static and dynamic config,
 * in front of a Dendrite already running on loopback (the host stack). The same adaptations as
 * test/traefikBinary.real.test.ts: entrypoints on free loopback ports; the Swarm provider pointed at a
 * loopback Docker Engine API that lists the plan's services and networks; plus, here, the dendrite task at
 * 127.0.0.1 and its service port (and the forwardAuth `http://dendrite:8008`) at the host Dendrite's port.
 */

export interface TraefikFront {
  pid: number;
  httpsPort: number;
  httpPort: number;
  host: string;
  adaptations: string[];
  stop: () => Promise<void>;
}

export function traefikBinary(): string {
  return execFileSync(path.join(ROOT, "test/images/build-traefik.sh"), { encoding: "utf8", timeout: 1_800_000, stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startTraefikFront(plan: PlanOnDisk, dendritePort: number, bin = traefikBinary()): Promise<TraefikFront> {
  const adaptations: string[] = [];
  const swarm = planSwarm(plan.resources);
  const { services } = swarm;
  const dendrite = services.find((s) => s.name === "dendrite");
  if (!dendrite) throw new Error("the local plan has no dendrite service");
  const portLabel = "traefik.http.services.dendrite.loadbalancer.server.port";
  if (!dendrite.labels[portLabel]) throw new Error(`the dendrite service has no ${portLabel} label`);
  dendrite.labels[portLabel] = String(dendritePort);
  adaptations.push(`traefik: dendrite task at 127.0.0.1:${dendritePort} (the service port label says 8008)`);
  for (const s of services) {
    for (const [k, v] of Object.entries(s.labels)) {
      const nv = v.replace(/\/\/dendrite:8008\b/g, `//127.0.0.1:${dendritePort}`);
      if (nv !== v) {
        s.labels[k] = nv;
        adaptations.push(`traefik: ${k} -> 127.0.0.1:${dendritePort}`);
      }
    }
  }
  // Other services' tasks on unused loopback addresses: nothing of theirs is measured.
  const other = 30 + Math.floor(Math.random() * 200);
  const addrs = new Map(services.map((s, i) => [s.id, s === dendrite ? "127.0.0.1" : `127.${other}.0.${i + 1}`]));
  const api = swarmApiStandIn(swarm, { addr: (s) => addrs.get(s.id)! });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));

  const dir = mkdtempSync(path.join(tmpdir(), "hm-bench-traefik-"));
  const st = parse(plan.files.get("traefik-static/traefik.yml") ?? "") as {
    entryPoints: Record<string, { address: string }>;
    providers: { swarm: { endpoint: string }; file: { filename: string } };
  };
  const ports: Record<string, number> = {};
  for (const [name, ep] of Object.entries(st.entryPoints)) {
    ports[name] = await freePort();
    ep.address = `127.0.0.1:${ports[name]}`;
  }
  adaptations.push(`traefik: entrypoints on 127.0.0.1 (${Object.entries(ports).map(([n, p]) => `${n} ${p}`).join(", ")})`);
  st.providers.swarm.endpoint = `tcp://127.0.0.1:${(api.address() as AddressInfo).port}`;
  st.providers.file.filename = path.join(dir, "dynamic.yml");
  adaptations.push("traefik: Swarm provider on a loopback Docker API listing the plan's services; dynamic.yml in a temp dir");
  writeFileSync(st.providers.file.filename, plan.files.get("traefik-dynamic/dynamic.yml") ?? "");
  const staticFile = path.join(dir, "traefik.yml");
  writeFileSync(staticFile, stringify(st));
  const host = /Host\(`([^`]+)`\)/.exec(dendrite.labels["traefik.http.routers.dendrite-client.rule"] ?? "")?.[1];
  if (!host) throw new Error("no Host() in the dendrite-client router rule");

  let output = "";
  // The access log goes to stdout: keep only the tail.
  const proc: ChildProcess = spawn(bin, [`--configFile=${staticFile}`], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const keep = (c: Buffer) => (output = (output + c.toString()).slice(-20_000));
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once("close", r));
      proc.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    }
    api.close();
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  const https = await import("node:https");
  for (;;) {
    if (proc.exitCode !== null) {
      await stop();
      throw new Error(`traefik exited ${proc.exitCode}:\n${output}`);
    }
    const status = await new Promise<number>((resolve) => {
      const req = https.request({ host: "127.0.0.1", port: ports.websecure, path: "/_matrix/client/versions", servername: host, headers: { Host: host }, rejectUnauthorized: false, timeout: 5000 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", () => resolve(0));
      req.on("timeout", () => req.destroy());
      req.end();
    });
    if (status === 200) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`no route through Traefik to Dendrite within 60 s (last ${status}):\n${output.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { pid: proc.pid!, httpsPort: ports.websecure, httpPort: ports.web, host, adaptations, stop };
}

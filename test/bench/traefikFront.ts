import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parse, stringify } from "yaml";
import { ROOT, type PlanOnDisk } from "../support/plan";

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

interface PlanService {
  id: string;
  name: string;
  labels: Record<string, string>;
  networks: string[];
}

/** The Docker Engine API calls Traefik's Swarm provider makes (pkg/provider/docker/pswarm.go), over the plan. */
function dockerApi(services: PlanService[], networks: Map<string, string>, addr: (s: PlanService) => string): http.Server {
  const json = (res: http.ServerResponse, body: unknown) => {
    res.writeHead(200, { "Content-Type": "application/json", "Api-Version": "1.47" });
    res.end(JSON.stringify(body));
  };
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://docker");
    const p = url.pathname.replace(/^\/v[0-9.]+/, "");
    if (p === "/_ping") {
      res.writeHead(200, { "Api-Version": "1.47", "Content-Type": "text/plain" });
      return res.end(req.method === "HEAD" ? undefined : "OK");
    }
    if (p === "/version") return json(res, { Version: "27.5.1", ApiVersion: "1.47", MinAPIVersion: "1.24", Os: "linux", Arch: "amd64" });
    if (p === "/networks") return json(res, [...networks].map(([id, name]) => ({ Id: id, Name: name, Scope: "swarm", Driver: "overlay" })));
    if (p === "/services") {
      return json(
        res,
        services.map((s) => ({ ID: s.id, Version: { Index: 1 }, Spec: { Name: s.name, Labels: s.labels, Mode: { Replicated: { Replicas: 1 } }, EndpointSpec: { Mode: "vip" } }, Endpoint: { Spec: { Mode: "vip" } } })),
      );
    }
    if (p === "/tasks") {
      const filters = JSON.parse(url.searchParams.get("filters") ?? "{}") as Record<string, Record<string, boolean>>;
      const ids = Object.keys(filters.service ?? {});
      return json(
        res,
        services
          .filter((s) => ids.length === 0 || ids.includes(s.id))
          .map((s) => ({
            ID: `task-${s.id}`,
            ServiceID: s.id,
            Slot: 1,
            DesiredState: "running",
            Status: { State: "running" },
            NetworksAttachments: s.networks.map((n) => ({ Network: { ID: n, Spec: { Name: networks.get(n) } }, Addresses: [`${addr(s)}/8`] })),
          })),
      );
    }
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ message: `not served: ${req.method} ${p}` }));
  });
}

export async function startTraefikFront(plan: PlanOnDisk, dendritePort: number, bin = traefikBinary()): Promise<TraefikFront> {
  const adaptations: string[] = [];
  const networks = new Map<string, string>();
  const services: PlanService[] = [];
  const rs = plan.resources as unknown as { type: string; id: string; inputs: Record<string, unknown> }[];
  for (const r of rs) if (r.type === "docker:index/network:Network") networks.set(r.id, r.inputs.name as string);
  for (const r of rs) {
    if (r.type !== "docker:index/service:Service") continue;
    const labels = Object.fromEntries(((r.inputs.labels ?? []) as { label: string; value: string }[]).map((l) => [l.label, l.value]));
    const task = (r.inputs.taskSpec ?? {}) as { networksAdvanceds?: { id?: string }[] };
    const nets = (task.networksAdvanceds ?? []).map((n) => n.id).filter((n): n is string => n !== undefined && networks.has(n));
    services.push({ id: r.id, name: r.inputs.name as string, labels, networks: nets });
  }
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
  const api = dockerApi(services, networks, (s) => addrs.get(s.id)!);
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

import { execFileSync, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { parse, stringify } from "yaml";
import { CERT_RESOLVER } from "../../components/render/traefik";
import type { NetnsLan } from "../support/netnsLan";
import { planToDisk, ROOT, type PlanOnDisk } from "../support/plan";
import { planSwarm, swarmApiStandIn } from "../support/swarmApiStandIn";
import { startHostStack, type HostStack } from "./hostStack";

/**
 * Two (or more) Matrix servers of this project federating inside one network namespace (test/support/netnsLan.ts):
 * per server the rendered Postgres and Dendrite (test/e2e/hostStack.ts), the federation gate the plan
 * delivers (run by node) and the real Traefik with the rendered static config and service labels (through
 * the Swarm API stand-in), its certificate issued by the real pebble through Traefik's own ACME resolver
 * (as test/traefikAcme.real.test.ts does for one Traefik), and Dendrite trusting pebble's root (SSL_CERT_FILE).
 *
 * The stacks are derived from Pulumi.dev.yaml (target digitalocean: the local target refuses acmeCa, and
 * only this keeps the rendered routers' certresolver, the gate and the Dendrite config as deployed) with
 * domain = server name, matrixHost "@", delegation none, and the federation mode under test.
 * Every change to a rendered file is listed in `adaptations`.
 */

export interface ServerSpec {
  /** Server name, also the stack's domain (matrixHost "@"). */
  name: string;
  /** Public address (Traefik's entrypoints at the published ports). */
  publicAddr: string;
  /** Private address of this server's services (Postgres, Dendrite, gate) at their rendered ports. */
  privateAddr: string;
  federation: { mode: "allowlist"; allow: string[] } | { mode: "open" };
  /** Run the edge (gate + Traefik + certificate). A server that only calls out needs none. */
  edge: boolean;
}

/** A stack config for `spec`, derived from Pulumi.dev.yaml; the stack files go to `configDir`. */
export function writeStackConfig(configDir: string, spec: ServerSpec): string {
  const stack = spec.name.split(".")[0];
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(configDir, "Pulumi.yaml"));
  const dev = readFileSync(path.join(ROOT, "Pulumi.dev.yaml"), "utf8");
  let text = dev.replace(/^(\s*hardened-matrix:domain:).*$/m, `$1 ${spec.name}`).replace(/^\s*hardened-matrix:(federationMode|federationAllowlist|matrixHost|delegation):.*\n/gm, "");
  if (!text.includes(`hardened-matrix:domain: ${spec.name}`)) throw new Error("Pulumi.dev.yaml has no hardened-matrix:domain to replace");
  const lines = [`  hardened-matrix:matrixHost: "@"`, `  hardened-matrix:delegation: none`, `  hardened-matrix:federationMode: ${spec.federation.mode}`];
  if (spec.federation.mode === "allowlist") lines.push("  hardened-matrix:federationAllowlist:", ...spec.federation.allow.map((a) => `    - ${a}`));
  text = text.replace(/^config:\n/m, `config:\n${lines.join("\n")}\n`);
  writeFileSync(path.join(configDir, `Pulumi.${stack}.yaml`), text);
  return stack;
}

function replaceOnce(text: string, from: string, to: string, what: string, log: string[]): string {
  const n = text.split(from).length - 1;
  if (n !== 1) throw new Error(`adaptation "${what}": expected one ${from}, found ${n}`);
  log.push(what);
  return text.replace(from, to);
}

export interface Pebble {
  /** pebble's ACME directory (inside the namespace). */
  directory: string;
  /** The CA that signed pebble's own HTTPS certificate (Traefik trusts it through LEGO_CA_CERTIFICATES). */
  apiCaFile: string;
  /** pebble's issuing root (PEM) and its file: what Dendrite and the test's client trust. */
  root: string;
  rootFile: string;
  log: () => string;
  issued: () => number;
}

const PEBBLE_ADDR = "127.0.0.1";
const PEBBLE = { acme: 14000, mgmt: 15000, dns: 53, dnsMgmt: 8055 };

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>, tail: () => string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s\n${tail().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 400));
  }
}

function logged(p: ChildProcess, keep = 200_000): () => string {
  let text = "";
  const add = (c: Buffer) => (text = (text + c.toString()).slice(-keep));
  p.stdout?.on("data", add);
  p.stderr?.on("data", add);
  return () => text;
}

/** pebble (Debian 2.4.0) and pebble-challtestsrv as its DNS, inside the namespace; records for every server. */
export async function startPebble(lan: NetnsLan, dir: string, servers: ServerSpec[]): Promise<Pebble> {
  const ssl = (args: string[]): void => void execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  ssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "api-ca.key", "-out", "api-ca.pem", "-days", "2", "-subj", "/CN=federation test: pebble API CA"]);
  ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "pebble.key", "-out", "pebble.csr", "-subj", `/CN=${PEBBLE_ADDR}`]);
  writeFileSync(path.join(dir, "san.ext"), `subjectAltName=IP:${PEBBLE_ADDR}\n`);
  ssl(["x509", "-req", "-in", "pebble.csr", "-CA", "api-ca.pem", "-CAkey", "api-ca.key", "-CAcreateserial", "-out", "pebble.pem", "-days", "2", "-extfile", "san.ext"]);
  writeFileSync(
    path.join(dir, "pebble.json"),
    JSON.stringify({
      pebble: {
        listenAddress: `${PEBBLE_ADDR}:${PEBBLE.acme}`,
        managementListenAddress: `${PEBBLE_ADDR}:${PEBBLE.mgmt}`,
        certificate: path.join(dir, "pebble.pem"),
        privateKey: path.join(dir, "pebble.key"),
        // HTTP-01 on port 80 of the name's address: the Traefik `web` entrypoint at its published port.
        httpPort: 80,
        tlsPort: 443,
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
      },
    }),
  );
  const dns = lan.spawn("pebble-challtestsrv", ["-dns01", `${PEBBLE_ADDR}:${PEBBLE.dns}`, "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", `${PEBBLE_ADDR}:${PEBBLE.dnsMgmt}`, "-defaultIPv4", "", "-defaultIPv6", ""]);
  const dnsLog = logged(dns);
  const pebble = lan.spawn("pebble", ["-config", path.join(dir, "pebble.json"), "-dnsserver", `${PEBBLE_ADDR}:${PEBBLE.dns}`], { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" });
  const log = logged(pebble);
  await until("pebble's ACME directory", 20_000, async () => (/ACME directory available/.test(log()) ? true : undefined), () => log() + dnsLog());
  // The servers' names in pebble's DNS (the same addresses as the namespace's hosts file).
  for (const s of servers) {
    await until(`challtestsrv record for ${s.name}`, 10_000, async () => {
      const r = await lan.fetch(`http://${PEBBLE_ADDR}:${PEBBLE.dnsMgmt}/${s.publicAddr.includes(":") ? "add-aaaa" : "add-a"}`, {
        method: "POST",
        body: JSON.stringify({ host: `${s.name}.`, addresses: [s.publicAddr] }),
        signal: AbortSignal.timeout(3000),
      });
      return r.ok ? true : undefined;
    }, dnsLog);
  }
  lan.ca.push(readFileSync(path.join(dir, "api-ca.pem"), "utf8"));
  const root = await until("pebble's root", 10_000, async () => {
    const r = await lan.fetch(`https://${PEBBLE_ADDR}:${PEBBLE.mgmt}/roots/0`, { signal: AbortSignal.timeout(3000) });
    return r.ok ? await r.text() : undefined;
  }, log);
  lan.ca.push(root);
  const rootFile = path.join(dir, "pebble-root.pem");
  writeFileSync(rootFile, root, { mode: 0o644 });
  return {
    directory: `https://${PEBBLE_ADDR}:${PEBBLE.acme}/dir`,
    apiCaFile: path.join(dir, "api-ca.pem"),
    root,
    rootFile,
    log,
    issued: () => (log().match(/Issued certificate serial/g) ?? []).length,
  };
}

export interface Edge {
  adaptations: string[];
  traefikLog: () => string;
  gateLog: () => string;
  /** Traefik's access log lines (JSON) on an entrypoint. */
  access: (entryPoint: string) => { RequestPath?: string; DownstreamStatus?: number; RouterName?: string; entryPointName?: string }[];
  stop: () => Promise<void>;
}

/** The federation gate and Traefik of `plan`, in front of the host stack's Dendrite, in the namespace. */
export async function startEdge(lan: NetnsLan, plan: PlanOnDisk, spec: ServerSpec, pebble: Pebble, dir: string, traefikBin: string): Promise<Edge> {
  const adaptations: string[] = [];
  const children: ChildProcess[] = [];
  const servers: http.Server[] = [];
  mkdirSync(dir, { recursive: true });

  // ---- the federation gate: the very file the plan delivers ----
  const gateFile = path.join(dir, "gate.js");
  const gateSrc = plan.files.get("federation-gate-program/gate.js");
  if (!gateSrc) throw new Error("the plan delivers no federation-gate-program/gate.js");
  writeFileSync(gateFile, gateSrc);
  const gatePort = Number(/"port":(\d+)/.exec(gateSrc)?.[1]);
  const gate = lan.spawn(process.execPath, [gateFile], { PATH: process.env.PATH ?? "", FEDGATE_HOST: spec.privateAddr });
  children.push(gate);
  const gateLog = logged(gate);
  adaptations.push(`gate: listens on ${spec.privateAddr}:${gatePort} (FEDGATE_HOST; the service listens on its overlay address), run by this machine's node as root (the service: node:24 as 1000:1000)`);
  await until("the gate listening", 10_000, async () => (/"msg":"listening"/.test(gateLog()) ? true : undefined), gateLog);

  // ---- Traefik: the plan's services and labels through the Swarm API stand-in ----
  const swarm = planSwarm(plan.resources);
  const byName = new Map(swarm.services.map((s) => [s.name, s]));
  for (const s of swarm.services) {
    for (const [k, v] of Object.entries(s.labels)) {
      const nv = v.replace(/\/\/(dendrite|federation-gate):(\d+)/g, (_m, _host: string, port: string) => `//${spec.privateAddr}:${port}`);
      if (nv !== v) {
        s.labels[k] = nv;
        adaptations.push(`traefik: label ${k} -> ${nv} (the Swarm DNS name of the service on this server's address)`);
      }
    }
  }
  if (!byName.get("dendrite") || !byName.get("federation-gate")) throw new Error("the plan has no dendrite or federation-gate service");
  const other = new Map(swarm.services.map((s, i) => [s.id, `127.0.9.${i + 1}`]));
  const sockPath = path.join(dir, "docker.sock");
  const api = swarmApiStandIn(swarm, { addr: (s) => (s.name === "dendrite" || s.name === "federation-gate" ? spec.privateAddr : other.get(s.id)!) });
  await new Promise<void>((r) => api.listen(sockPath, r));
  servers.push(api);
  adaptations.push(`traefik: the Swarm provider on a Docker API stand-in (unix socket) listing the plan's services; dendrite's task at ${spec.privateAddr}, the others' at unused 127.0.9.x`);

  const traefikService = plan.resources.find((r) => r.name === "traefik-service") as { inputs: { endpointSpec: { ports: { name: string; targetPort: number; publishedPort: number }[] } } } | undefined;
  const published = new Map((traefikService?.inputs.endpointSpec.ports ?? []).map((p) => [p.name, p.publishedPort]));
  const st = parse(plan.files.get("traefik-static/traefik.yml") ?? "") as {
    entryPoints: Record<string, { address: string }>;
    providers: { swarm: { endpoint: string }; file: { filename: string } };
    certificatesResolvers: Record<string, { acme: { caServer: string; storage: string } }>;
  };
  const bracket = (a: string) => (a.includes(":") ? `[${a}]` : a);
  for (const [name, ep] of Object.entries(st.entryPoints)) {
    const pub = published.get(name);
    const from = ep.address;
    ep.address = pub ? `${bracket(spec.publicAddr)}:${pub}` : `${spec.privateAddr}:${/:(\d+)$/.exec(from)?.[1]}`;
    adaptations.push(`traefik: entrypoint ${name} ${from} -> ${ep.address}${pub ? " (the port the Swarm ingress publishes it on)" : " (private: this server's address)"}`);
  }
  const acme = st.certificatesResolvers[CERT_RESOLVER].acme;
  adaptations.push(`traefik: ${CERT_RESOLVER} caServer ${acme.caServer} -> pebble ${pebble.directory}; pebble's API certificate trusted through LEGO_CA_CERTIFICATES`);
  acme.caServer = pebble.directory;
  mkdirSync(path.join(dir, "acme"), { mode: 0o700 });
  acme.storage = path.join(dir, "acme", path.basename(acme.storage));
  adaptations.push(`traefik: acme storage -> ${acme.storage} (the volume mounted at /acme)`);
  st.providers.swarm.endpoint = `unix://${sockPath}`;
  st.providers.file.filename = path.join(dir, "dynamic.yml");
  let dynamic = plan.files.get("traefik-dynamic/dynamic.yml") ?? "";
  // The admin TCP router's backend is the admin-loopback entrypoint, moved with it (one per server here).
  dynamic = replaceOnce(dynamic, "address: 127.0.0.1:9444", `address: ${spec.privateAddr}:9444`, `traefik dynamic: admin-loopback service -> ${spec.privateAddr}:9444 (its entrypoint's new address)`, adaptations);
  writeFileSync(st.providers.file.filename, dynamic);
  const staticFile = path.join(dir, "traefik.yml");
  writeFileSync(staticFile, stringify(st));
  adaptations.push("traefik: run by root (binds the published ports itself; the service runs as 10001 behind the Swarm ingress)");
  const traefik = lan.spawn(traefikBin, [`--configFile=${staticFile}`], { ...process.env, LEGO_CA_CERTIFICATES: pebble.apiCaFile }, dir);
  children.push(traefik);
  const traefikLog = logged(traefik, 2_000_000);

  // Up when it serves a pebble-issued certificate for the server name (verified against pebble's root and the name).
  await until(`Traefik of ${spec.name} serving a pebble certificate`, 120_000, async () => {
    if (traefik.exitCode !== null) throw new Error(`traefik exited ${traefik.exitCode}`);
    const s = await lan.connectTls(spec.name, 443, spec.name, 5000);
    const ok = s.authorized && /Pebble Intermediate/.test(String(s.getPeerCertificate().issuer?.CN));
    s.destroy();
    return ok ? true : undefined;
  }, () => `${traefikLog().slice(-3000)}\n--- pebble ---\n${pebble.log().slice(-2000)}`);

  return {
    adaptations,
    traefikLog,
    gateLog,
    access: (entryPoint) =>
      traefikLog()
        .split("\n")
        .filter((l) => l.includes('"entryPointName"'))
        .map((l) => {
          try {
            return JSON.parse(l) as ReturnType<Edge["access"]>[number];
          } catch {
            return {};
          }
        })
        .filter((e) => e.entryPointName === entryPoint),
    stop: async () => {
      for (const c of children) c.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 500));
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      for (const s of servers) s.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface FederatedServer {
  spec: ServerSpec;
  plan: PlanOnDisk;
  stack: HostStack;
  edge?: Edge;
}

/** Renders each server's plan (its own stack config) and starts its stack, in the namespace. */
export async function startServers(lan: NetnsLan, specs: ServerSpec[], pebble: Pebble, work: string, opts: { dendriteDir: string; traefikBin: string; lifetimeSeconds: number; log: (l: string) => void }): Promise<FederatedServer[]> {
  const configDir = path.join(work, "stacks");
  mkdirSync(configDir, { recursive: true });
  const plans = specs.map((s) => planToDisk(writeStackConfig(configDir, s), ["--config-dir", configDir]));
  const out: FederatedServer[] = [];
  try {
    // Postgres and Dendrite of every server at once (2 cores: the edges follow one by one).
    const stacks = await Promise.all(
      specs.map((spec, i) =>
        startHostStack({
          plan: plans[i],
          dendriteDir: opts.dendriteDir,
          netns: lan.exec.slice(0, 4),
          bindAddress: spec.privateAddr,
          maxLifetimeSeconds: opts.lifetimeSeconds,
          turn: false,
          dendriteEnv: { SSL_CERT_FILE: pebble.rootFile },
          log: (l) => opts.log(`${spec.name}: ${l}`),
        }).then((stack) => {
          out.push({ spec, plan: plans[i], stack });
          return stack;
        }),
      ),
    );
    for (const [i, spec] of specs.entries()) {
      const server = out.find((s) => s.stack === stacks[i])!;
      stacks[i].adaptations.push(`dendrite: SSL_CERT_FILE=${pebble.rootFile} (Go's roots: pebble's, the CA that issued every server's certificate)`);
      if (spec.edge) {
        server.edge = await startEdge(lan, plans[i], spec, pebble, path.join(work, `edge-${spec.name}`), opts.traefikBin);
        opts.log(`${spec.name}: Traefik serves a pebble certificate on ${spec.publicAddr}`);
      }
    }
  } catch (e) {
    for (const s of out) {
      await s.edge?.stop();
      await s.stack.stop();
    }
    for (const p of plans) rmSync(path.dirname(p.dir), { recursive: true, force: true });
    throw e;
  }
  return specs.map((spec) => out.find((s) => s.spec === spec)!);
}

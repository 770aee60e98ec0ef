import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as tls from "node:tls";
import { after, before, test } from "node:test";
import { parse, stringify } from "yaml";
import { TRAEFIK_DYNAMIC_PATH, TRAEFIK_PORTS } from "../components/render/traefik";
import { DEFAULT_IMAGES } from "../components/settings";
import { planToDisk, ROOT, type PlanOnDisk } from "./support/plan";
import { planSwarm, swarmApiStandIn } from "./support/swarmApiStandIn";

// The real Traefik (v3.7.13 built from the Go module proxy by test/images/build-traefik.sh) runs the
// local stack's rendered static and dynamic configuration, its routers coming from the Dendrite
// service's rendered labels through Traefik's own Swarm provider. Traefik judges: the config loads,
// a Matrix route reaches the backend with the security headers, the token gate (forwardAuth) holds,
// admin paths stay closed, plain HTTP redirects, TLS below the floor is refused, the access log keeps
// no credentials, and the service's healthcheck command passes.
//
// Adaptations of the rendered files, all for running without Docker on loopback:
// - every entrypoint's address `:PORT` -> `127.0.0.1:<free port>` (the web redirect's target,
//   the published HTTPS port, is kept: it is only written into Location);
// - providers.swarm.endpoint `tcp://socket-proxy:2375` -> a loopback Docker Engine API that serves
//   the plan's Swarm services (name, labels), networks and one running task per service, each task
//   on a loopback address per network it joins (in place of the socket proxy and the engine);
// - providers.file.filename -> the rendered dynamic.yml copied to a temporary directory;
// - the labels' Swarm DNS names (`http://dendrite:8008/...` in forwardAuth) -> that task's address.

const bin = (() => {
  try {
    return execFileSync(path.join(ROOT, "test/images/build-traefik.sh"), ["--check"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
})();
if (!bin && process.env.CI) throw new Error("Traefik is not built: .ci/run runs test/images/build-traefik.sh before npm test");
const skip = bin ? false : "Traefik not built (run test/images/build-traefik.sh)";

const MATRIX_HOST = "matrix.localhost";
const GOOD_TOKEN = "syt_good_token";
/** Distinct loopback addresses (all of 127/8 is local on Linux): one per task and network. */
const base = 20 + Math.floor(Math.random() * 200);
let nextHost = 1;
const loopback = () => `127.${base}.${Math.floor(nextHost / 250)}.${(nextHost++ % 250) + 1}`;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}
const seen: Seen[] = [];
const dockerCalls: string[] = [];
const servers: { close(cb?: () => void): unknown }[] = [];
let traefik: ChildProcess | undefined;
let output = "";
let dir = "";
let plan: PlanOnDisk;
const ports: Record<string, number> = {};
let staticFile = "";
let dendriteAddr = "";

/** The Dendrite stand-in: records what reaches it; answers whoami by the token, as Dendrite does. */
function backend(): http.Server {
  return http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    if (req.url?.startsWith("/_matrix/client/v3/account/whoami")) {
      const ok = req.headers.authorization === `Bearer ${GOOD_TOKEN}`;
      res.writeHead(ok ? 200 : 401, { "Content-Type": "application/json" });
      res.end(ok ? '{"user_id":"@a:localhost"}' : '{"errcode":"M_MISSING_TOKEN"}');
      return;
    }
    res.writeHead(200, { "Content-Type": "application/json", "X-Powered-By": "dendrite-stand-in", Server: "dendrite-stand-in" });
    res.end(JSON.stringify({ path: req.url }));
  });
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}
function httpsGet(p: string, headers: Record<string, string> = {}, entrypoint = "websecure"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: "127.0.0.1", port: ports[entrypoint], path: p, servername: MATRIX_HOST, headers: { Host: MATRIX_HOST, ...headers }, rejectUnauthorized: false, timeout: 10_000 },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

before(async () => {
  if (skip) return;
  plan = planToDisk("local");
  dir = mkdtempSync(path.join(tmpdir(), "hm-traefik-"));

  // The plan's Swarm networks and services, as the engine would list them.
  const swarm = planSwarm(plan.resources);
  const { services, networks } = swarm;
  const addrs = new Map(services.map((s) => [s.id, new Map(s.networks.map((n) => [n, loopback()]))]));
  const dendrite = services.find((s) => s.name === "dendrite");
  assert.ok(dendrite, "the local plan has a dendrite service");
  const edgeId = [...networks].find(([, n]) => n === dendrite.labels["traefik.swarm.network"])?.[0];
  assert.ok(edgeId && dendrite.networks.includes(edgeId), "dendrite joins the network its traefik.swarm.network label names");
  dendriteAddr = addrs.get(dendrite.id)?.get(edgeId) ?? "";
  // Swarm DNS names in label values -> the task's address on that network.
  for (const s of services) {
    for (const [k, v] of Object.entries(s.labels)) {
      s.labels[k] = v.replace(/\/\/([a-z0-9-]+):/g, (m, host: string) => {
        const target = services.find((t) => t.name === host);
        const addr = target && addrs.get(target.id)?.get(edgeId);
        return addr ? `//${addr}:` : m;
      });
    }
  }

  const port = Number(dendrite.labels["traefik.http.services.dendrite.loadbalancer.server.port"]);
  const b = backend();
  await new Promise<void>((r) => b.listen(port, dendriteAddr, r));
  servers.push(b);
  const api = swarmApiStandIn(swarm, { addr: (s, n) => addrs.get(s.id)?.get(n) ?? "", onCall: (c) => dockerCalls.push(c) });
  await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
  servers.push(api);

  // The rendered files, adapted as listed at the top.
  const st = parse(plan.files.get("traefik-static/traefik.yml") ?? "") as {
    entryPoints: Record<string, { address: string }>;
    providers: { swarm: { endpoint: string }; file: { filename: string } };
  };
  assert.equal(st.providers.file.filename, TRAEFIK_DYNAMIC_PATH);
  for (const [name, ep] of Object.entries(st.entryPoints)) {
    ports[name] = await freePort();
    ep.address = `127.0.0.1:${ports[name]}`;
  }
  st.providers.swarm.endpoint = `tcp://127.0.0.1:${(api.address() as AddressInfo).port}`;
  st.providers.file.filename = path.join(dir, "dynamic.yml");
  writeFileSync(st.providers.file.filename, plan.files.get("traefik-dynamic/dynamic.yml") ?? "");
  staticFile = path.join(dir, "traefik.yml");
  writeFileSync(staticFile, stringify(st));

  // As the service runs it (components/services/traefik.ts: `traefik --configFile=...`).
  traefik = spawn(bin as string, [`--configFile=${staticFile}`], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  traefik.stdout?.on("data", (c: Buffer) => (output += c.toString()));
  traefik.stderr?.on("data", (c: Buffer) => (output += c.toString()));
  // Ready when the Swarm provider's first listing has reached the router (the provider polls).
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (traefik.exitCode !== null) throw new Error(`traefik exited ${traefik.exitCode}:\n${output}`);
    const r = await httpsGet("/_matrix/client/versions").catch(() => undefined);
    if (r?.status === 200) break;
    if (Date.now() > deadline) throw new Error(`no route to the backend within 60 s (last: ${r?.status}); docker API calls: ${dockerCalls.join(", ")}\n${output}`);
    await new Promise((r) => setTimeout(r, 500));
  }
});

after(() => {
  traefik?.kill("SIGTERM");
  for (const s of servers) s.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the binary is the release the stacks pin", { skip }, () => {
  const r = spawnSync(bin as string, ["version"], { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Version:\s+(\S+)$/m);
  assert.equal(`traefik:v${/^Version:\s+(\S+)$/m.exec(r.stdout)?.[1]}`, DEFAULT_IMAGES.traefik, r.stdout);
});

test("the rendered static and dynamic config load without an error in Traefik's log", { skip }, () => {
  const lines = output.split("\n").filter((l) => l.startsWith("{"));
  const errors = lines.map((l) => JSON.parse(l) as { level?: string; message?: string }).filter((l) => l.level === "error" || l.level === "fatal");
  assert.deepEqual(errors, [], output);
  assert.ok(dockerCalls.some((c) => c.endsWith("/services")), "the Swarm provider listed the services");
});

test("a Matrix route answers through Traefik with the security headers, the backend's own headers removed", { skip }, async () => {
  const r = await httpsGet("/_matrix/client/versions");
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.body), { path: "/_matrix/client/versions" });
  assert.equal(r.headers["strict-transport-security"], "max-age=31536000");
  assert.equal(r.headers["x-frame-options"], "DENY");
  assert.equal(r.headers["x-content-type-options"], "nosniff");
  assert.equal(r.headers["referrer-policy"], "no-referrer");
  assert.equal(r.headers["x-powered-by"], undefined);
  assert.equal(r.headers.server, undefined);
  const wk = await httpsGet("/.well-known/matrix/client");
  assert.equal(wk.status, 200);
  assert.equal(wk.headers["access-control-allow-origin"], "*");
  assert.equal(wk.headers["x-frame-options"], "DENY");
});

test("admin paths are closed: Traefik answers 404 and the backend never sees them", { skip }, async () => {
  for (const p of ["/_dendrite/admin/evacuateUser/@a:localhost", "/_synapse/admin/v1/register", "/_dendrite/", "/_matrix/client/../../_dendrite/admin/x"]) {
    const r = await httpsGet(p);
    assert.equal(r.status, 404, p);
  }
  assert.deepEqual(
    seen.filter((s) => /_dendrite|_synapse/.test(s.url)),
    [],
  );
});

test("the token gate: publicRooms without a valid token stops at forwardAuth; with one it reaches Dendrite", { skip }, async () => {
  const before = seen.length;
  const anon = await httpsGet("/_matrix/client/v3/publicRooms");
  assert.equal(anon.status, 401);
  const bad = await httpsGet("/_matrix/client/v3/publicRooms", { Authorization: "Bearer wrong" });
  assert.equal(bad.status, 401);
  assert.ok(!seen.slice(before).some((s) => s.url.includes("publicRooms")), "no unauthenticated publicRooms request reached the backend");
  const ok = await httpsGet("/_matrix/client/v3/publicRooms", { Authorization: `Bearer ${GOOD_TOKEN}` });
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), { path: "/_matrix/client/v3/publicRooms" });
  const media = await httpsGet("/_matrix/media/v3/download/localhost/abc");
  assert.equal(media.status, 401, "media download without a token");
});

test("plain HTTP on the web entrypoint redirects permanently to HTTPS on the published port", { skip }, async () => {
  const plain = (method: string) =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      http.request({ host: "127.0.0.1", port: ports.web, method, path: "/_matrix/client/v3/login", headers: { Host: MATRIX_HOST } }, resolve).on("error", reject).end();
    });
  // 301 for GET, 308 otherwise (traefik pkg/middlewares/redirect/redirect.go, permanent).
  for (const [method, status] of [["GET", 301], ["POST", 308]] as const) {
    const r = await plain(method);
    r.resume();
    assert.equal(r.statusCode, status, method);
    assert.equal(r.headers.location, `https://${MATRIX_HOST}:${TRAEFIK_PORTS.websecure}/_matrix/client/v3/login`);
  }
  assert.ok(!seen.some((s) => s.headers["x-forwarded-proto"] === "http"), "nothing reached the backend over plain HTTP");
});

function handshake(opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: "127.0.0.1", port: ports.websecure, servername: MATRIX_HOST, rejectUnauthorized: false, ...opts }, () => {
      const v = `${s.getProtocol()} ${s.getCipher().standardName}`;
      s.end();
      resolve(v);
    });
    s.on("error", (e) => resolve(`refused: ${e.message}`));
  });
}

test("TLS: 1.2 with an AEAD forward-secret suite is accepted; CBC suites and TLS 1.1 are refused", { skip }, async () => {
  assert.match(await handshake({ maxVersion: "TLSv1.2", ciphers: "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256" }), /^TLSv1\.2 TLS_ECDHE_/);
  assert.match(await handshake({ maxVersion: "TLSv1.2", ciphers: "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA" }), /^refused/);
  assert.match(await handshake({ minVersion: "TLSv1", maxVersion: "TLSv1.1", ciphers: "DEFAULT@SECLEVEL=0" }), /^refused/);
  assert.match(await handshake({}), /^TLSv1\.3 /);
});

test("the access log keeps no token: query string and Authorization are dropped", { skip }, async () => {
  const secret = `secret${Date.now()}`;
  const r = await httpsGet(`/_matrix/client/v3/sync?access_token=${secret}`, { Authorization: `Bearer ${secret}x`, "User-Agent": "hm-test-agent" });
  assert.equal(r.status, 200);
  await new Promise((res) => setTimeout(res, 1000));
  const access = output.split("\n").filter((l) => l.includes('"RequestPath"'));
  const line = access.find((l) => l.includes("/_matrix/client/v3/sync"));
  assert.ok(line, `an access log line for the request:\n${output.slice(-2000)}`);
  assert.ok(!output.includes(secret), "the token appears nowhere in Traefik's output");
  const entry = JSON.parse(line) as Record<string, unknown>;
  assert.equal(entry.RequestPath, "/_matrix/client/v3/sync");
  assert.equal(entry["request_User-Agent"], "hm-test-agent");
});

test("the service's healthcheck command passes against the running Traefik", { skip }, () => {
  // components/services/traefik.ts healthcheck: traefik healthcheck --ping --configFile=...
  const r = spawnSync(bin as string, ["healthcheck", "--ping", `--configFile=${staticFile}`], { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

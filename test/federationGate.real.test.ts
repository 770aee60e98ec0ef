import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { planToDisk, ROOT } from "./support/plan";

// The very gate file the offline plan delivers, run by a real node on 127.0.0.1 and asked with raw
// HTTP, so duplicated Authorization headers really go on the wire as Traefik forwards them.
const work = mkdtempSync(path.join(tmpdir(), "hm-gate-real-"));
let child: ChildProcess | undefined;
let port = 0;
let healthcheck: string[] = [];

before(async () => {
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(work, "Pulumi.yaml"));
  const local = readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8").replace(/^\s*hardened-matrix:federation(Mode|Allowlist):.*\n/gm, "");
  writeFileSync(
    path.join(work, "Pulumi.gate.yaml"),
    `${local.trimEnd()}\n  hardened-matrix:federationMode: allowlist\n  hardened-matrix:federationAllowlist:\n    - friend.org\n    - matrix.org\n`,
  );
  const plan = planToDisk("gate", ["--config-dir", work]);
  const file = plan.files.get("federation-gate-program/gate.js");
  assert.ok(file, `no gate file in the plan: ${[...plan.files.keys()].join(", ")}`);
  const svc = plan.resources.find((r) => r.name === "federation-gate-service");
  healthcheck = (svc?.inputs as { taskSpec: { containerSpec: { healthcheck: { tests: string[] } } } }).taskSpec.containerSpec.healthcheck.tests;
  const gateFile = path.join(work, "gate.js");
  writeFileSync(gateFile, file);
  child = spawn(process.execPath, [gateFile], { env: { PATH: process.env.PATH ?? "", FEDGATE_HOST: "127.0.0.1", FEDGATE_PORT: "0" }, stdio: ["ignore", "pipe", "inherit"] });
  port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("gate did not start within 10 s")), 10_000);
    let out = "";
    child!.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
      const m = /"msg":"listening","port":(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child!.on("exit", (code) => reject(new Error(`gate exited ${code}`)));
  });
});

after(() => {
  child?.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

/** One raw request on its own connection; resolves with the status code. */
function ask(pathname: string, headers: [string, string][]): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.setTimeout(5000, () => socket.destroy(new Error("timed out")));
    let response = "";
    socket.on("data", (d) => (response += d.toString("latin1")));
    socket.on("error", reject);
    socket.on("close", () => {
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(response);
      if (m) resolve(Number(m[1]));
      else reject(new Error(`no HTTP status in ${JSON.stringify(response.slice(0, 200))}`));
    });
    const lines = [`GET ${pathname} HTTP/1.1`, "Host: federation-gate:8090", ...headers.map(([k, v]) => `${k}: ${v}`), "Connection: close", "", ""];
    socket.end(Buffer.from(lines.join("\r\n"), "latin1"));
  });
}
const sig = 'key="ed25519:a1",sig="dGVzdA"';
const verify = (...auth: string[]) => ask("/verify", [["X-Forwarded-Uri", "/_matrix/federation/v1/send/1"], ...auth.map((a): [string, string] => ["Authorization", a])]);

test("an allowed origin passes (the spec's header shape)", async () => {
  assert.equal(await verify(`X-Matrix origin="friend.org",destination="us.example",${sig}`), 200);
  assert.equal(await verify("X-Matrix origin=matrix.org,key=ed25519:a1,sig=dGVzdA"), 200);
});

test("the two crafted headers are refused on the wire", async () => {
  assert.equal(await verify(`X-Matrix origin="friend.org",origin="evil.net",${sig}`), 403);
  assert.equal(await verify(`X-Matrix origin="evil.net",${sig},x="y origin=friend.org"`), 403);
});

test("duplicated Authorization headers are all read", async () => {
  assert.equal(await verify(`X-Matrix origin="friend.org",${sig}`, `X-Matrix origin="evil.net",${sig}`), 403);
  assert.equal(await verify(`X-Matrix origin="friend.org",${sig}`, `X-Matrix origin="friend.org",key="ed25519:b2",sig="eA"`), 200);
  assert.equal(await verify(`X-Matrix origin="friend.org",${sig}`, "Bearer abc"), 403);
});

test("missing header, other origins, case and quoting tricks are refused", async () => {
  assert.equal(await verify(), 403);
  assert.equal(await verify(`X-Matrix origin="evil.net",${sig}`), 403);
  assert.equal(await verify(`X-Matrix Origin="friend.org",${sig}`), 403);
  assert.equal(await verify(`X-Matrix origin="friend.org",key="a,origin=evil.net",sig="x"`), 403);
  assert.equal(await verify(`X-Matrix origin="",${sig}`), 403);
});

test("the service's own healthcheck command passes against the running gate and fails without it", () => {
  assert.equal(healthcheck[0], "CMD");
  assert.equal(healthcheck[1], "/usr/local/bin/node");
  const run = (p: number) => spawnSync(process.execPath, healthcheck.slice(2).map((a) => a.replace("127.0.0.1:8090/", `127.0.0.1:${p}/`)), { timeout: 10_000 });
  assert.equal(run(port).status, 0);
  // A port nothing listens on: the one the gate had before a fresh server took and released it.
  const closed = spawnSync(process.execPath, ["-e", "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"], { encoding: "utf8" });
  assert.equal(run(Number(closed.stdout.trim())).status, 1);
});

// Dendrite v0.15.2 serves these two without X-Matrix authentication (element-hq/dendrite
// federationapi/routing/routing.go: MakeExternalAPI, GET only); widgets, integration managers and
// Element Call ask openid/userinfo with no signature at all. Asked as Traefik's forwardAuth asks.
const asTraefik = (method: string, uri: string, ...extra: [string, string][]) => ask("/verify", [["X-Forwarded-Method", method], ["X-Forwarded-Uri", uri], ...extra]);

test("exactly the unsigned federation endpoints pass without a signature", async () => {
  assert.equal(await asTraefik("GET", "/_matrix/federation/v1/version"), 200);
  assert.equal(await asTraefik("GET", "/_matrix/federation/v1/openid/userinfo?access_token=abcdef"), 200);
  // Even with a header naming an origin that is not allowed: the endpoint ignores it.
  assert.equal(await asTraefik("GET", "/_matrix/federation/v1/version", ["Authorization", `X-Matrix origin="evil.net",${sig}`]), 200);
});

test("nothing else passes unsigned: other paths, other methods, near misses, doubled headers", async () => {
  for (const uri of [
    "/_matrix/federation/v1/send/1",
    "/_matrix/federation/v1/publicRooms",
    "/_matrix/federation/v1/query/profile?user_id=@a:b",
    "/_matrix/federation/v1/media/download/abc",
    "/_matrix/federation/v1/version/",
    "/_matrix/federation/v1/versions",
    "/_matrix/federation/v2/version",
    "/_matrix/federation/v1/%76ersion",
    "/_matrix/federation/v1/openid/userinfo/x",
    "/_matrix/federation/v1/openid/userinfo/../../v1/send/1",
    "/_matrix/federation//v1/version",
    "/_matrix/key/v2/query",
  ]) {
    assert.equal(await asTraefik("GET", uri), 403, uri);
  }
  for (const method of ["POST", "PUT", "OPTIONS", "HEAD", "get"]) assert.equal(await asTraefik(method, "/_matrix/federation/v1/version"), 403, method);
  assert.equal(await ask("/verify", [["X-Forwarded-Uri", "/_matrix/federation/v1/version"]]), 403, "no method");
  assert.equal(await ask("/verify", [["X-Forwarded-Method", "GET"]]), 403, "no URI");
  assert.equal(await asTraefik("GET", "/_matrix/federation/v1/version", ["X-Forwarded-Uri", "/_matrix/federation/v1/send/1"]), 403, "two URIs");
  assert.equal(await asTraefik("GET", "/_matrix/federation/v1/send/1", ["X-Forwarded-Method", "GET"]), 403, "two methods");
  // A signed request from an allowed origin still passes anywhere, as before.
  assert.equal(await asTraefik("PUT", "/_matrix/federation/v1/send/1", ["Authorization", `X-Matrix origin="friend.org",${sig}`]), 200);
});

test("health answers; no other path decides anything", async () => {
  assert.equal(await ask("/healthz", []), 200);
  assert.equal(await ask("/", [["Authorization", `X-Matrix origin="friend.org",${sig}`]]), 404);
});

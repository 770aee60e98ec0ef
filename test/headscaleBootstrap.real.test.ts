import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { BLOB_NAME, generateSealingKeyPair, openSealedApiKey, renderBootstrapScript, type BootstrapScriptInput } from "../components/render/headscaleBootstrap";
import { findTool } from "./support/realTool";

// The bootstrap script as the node runs it: real sh, real openssl, real python3 http.server on
// 127.0.0.1, with a stand-in `headscale` CLI that answers like v0.29.2's (cmd/headscale/cli).
const sh = findTool("sh", "dash");
const openssl = findTool("openssl", "openssl");
const python = findTool("python3", "python3");
const shellcheck = findTool("shellcheck", "shellcheck");

// Shaped as upstream makes them: base64url, so `-` and `_` inside (hscontrol/db/api_key.go CreateAPIKey).
const FAKE_KEY = `hskey-api-AB-DEF_HIJKL-${"a1".repeat(30)}-__-`;
const work = mkdtempSync(path.join(tmpdir(), "hm-hs-boot-"));
after(() => rmSync(work, { recursive: true, force: true }));

function standIn(dir: string): string {
  const file = path.join(dir, "headscale");
  writeFileSync(
    file,
    `#!/bin/sh
echo "$*" >> '${dir}/calls.log'
case "$1 $2" in
  "users list") cat '${dir}/users' 2>/dev/null; exit 0 ;;
  "users create") echo "$5" >> '${dir}/users'; echo "User created"; exit 0 ;;
  "apikeys create") echo '${FAKE_KEY}'; exit 0 ;;
esac
exit 1
`,
  );
  chmodSync(file, 0o755);
  return file;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function fetchBlob(url: string, deadline: number): Promise<Buffer> {
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return Buffer.from(await res.arrayBuffer());
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no blob at ${url}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("Headscale bootstrap: sealed API key", { skip: !(sh && openssl && python) && "sh, openssl or python3 missing" }, () => {
  const keys = generateSealingKeyPair();
  const other = generateSealingKeyPair();

  test("a blob sealed by the rendered first-boot step opens with Pulumi's key and not with another; served only for the window", async () => {
    const dir = mkdtempSync(path.join(work, "run-"));
    const port = await freePort();
    const input: BootstrapScriptInput = {
      sealingPublicKeyPem: keys.publicKeyPem,
      admins: ["alice@example.com", "bob@example.org"],
      apiKeyExpiry: "90d",
      windowSeconds: 60,
      bindAddress: "127.0.0.1",
      port,
      stateDir: path.join(dir, "state"),
    };
    const script = path.join(dir, "bootstrap.sh");
    writeFileSync(script, renderBootstrapScript(input));
    const child = spawn(sh!, [script], { env: { PATH: process.env.PATH ?? "", HEADSCALE: standIn(dir) }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    try {
      const blob = await fetchBlob(`http://127.0.0.1:${port}/${BLOB_NAME}`, Date.now() + 20_000);
      assert.ok(!blob.includes(Buffer.from("hskey-api-")), "the blob is sealed, not the key in clear");
      assert.equal(blob.length, 512, "one RSA-4096 block");
      assert.equal(openSealedApiKey(blob, keys.privateKeyPem), FAKE_KEY);
      assert.throws(() => openSealedApiKey(blob, other.privateKeyPem), /does not open with this stack's sealing key/);
      const tampered = Buffer.from(blob);
      tampered[100] = tampered[100]! ^ 1;
      assert.throws(() => openSealedApiKey(tampered, keys.privateKeyPem), /does not open/);
      // The admins' users were created with their emails, once each.
      assert.deepEqual(readFileSync(path.join(dir, "users"), "utf8").trim().split("\n"), ["alice@example.com", "bob@example.org"]);
      assert.match(readFileSync(path.join(dir, "calls.log"), "utf8"), /apikeys create --expiration 90d/);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
    assert.equal(stderr, "");
  });

  test("the window ends by itself: the server stops, the blob is deleted, a second run does nothing", async () => {
    const dir = mkdtempSync(path.join(work, "win-"));
    const port = await freePort();
    const stateDir = path.join(dir, "state");
    // The renderer refuses windows under 60 s; the test shortens the rendered one to stay quick.
    const text = renderBootstrapScript({ sealingPublicKeyPem: keys.publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 60, bindAddress: "127.0.0.1", port, stateDir }).replace("timeout 60 ", "timeout 2 ");
    const script = path.join(dir, "bootstrap.sh");
    writeFileSync(script, text);
    const env = { PATH: process.env.PATH ?? "", HEADSCALE: standIn(dir) };
    const run = spawnSync(sh!, [script], { env, timeout: 30_000, encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(existsSync(path.join(stateDir, "public", BLOB_NAME)), false, "blob deleted after the window");
    await assert.rejects(fetch(`http://127.0.0.1:${port}/${BLOB_NAME}`, { signal: AbortSignal.timeout(2000) }), "nothing listens after the window");
    const again = spawnSync(sh!, [script], { env, timeout: 10_000, encoding: "utf8" });
    assert.equal(again.status, 0);
    assert.equal((readFileSync(path.join(dir, "calls.log"), "utf8").match(/apikeys create/g) ?? []).length, 1, "one API key, ever");
  });

  test("a CLI that prints no API key stops the bootstrap with a clear message", () => {
    const dir = mkdtempSync(path.join(work, "bad-"));
    const fake = standIn(dir);
    writeFileSync(fake, readFileSync(fake, "utf8").replace(`echo '${FAKE_KEY}'`, "echo 'Error: permission denied'"));
    const script = path.join(dir, "bootstrap.sh");
    writeFileSync(script, renderBootstrapScript({ sealingPublicKeyPem: keys.publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 60, bindAddress: "127.0.0.1", port: 1, stateDir: path.join(dir, "state") }));
    const run = spawnSync(sh!, [script], { env: { PATH: process.env.PATH ?? "", HEADSCALE: fake }, timeout: 10_000, encoding: "utf8" });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /unexpected output from apikeys create/);
    assert.equal(existsSync(path.join(dir, "state", "public", BLOB_NAME)), false);
  });

  test("shellcheck finds nothing in the rendered script", { skip: !shellcheck && "shellcheck missing" }, () => {
    const script = path.join(work, "check.sh");
    writeFileSync(script, renderBootstrapScript({ sealingPublicKeyPem: keys.publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 1800, bindAddress: "0.0.0.0", port: 80, stateDir: "/var/lib/hm-headscale-bootstrap" }));
    const res = spawnSync(shellcheck!, ["-s", "sh", script], { encoding: "utf8" });
    assert.equal(res.status, 0, res.stdout);
  });

  test("input that could break the script is refused", () => {
    const base = { sealingPublicKeyPem: keys.publicKeyPem, admins: ["alice@example.com"], apiKeyExpiry: "90d", windowSeconds: 1800, bindAddress: "0.0.0.0", port: 80, stateDir: "/var/lib/x" };
    assert.throws(() => renderBootstrapScript({ ...base, admins: ["a'b@example.com"] }), /plain email/);
    assert.throws(() => renderBootstrapScript({ ...base, windowSeconds: 10 }), /windowSeconds/);
    assert.throws(() => renderBootstrapScript({ ...base, sealingPublicKeyPem: "x" }), /PEM/);
  });
});

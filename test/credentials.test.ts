import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { credentialProblems, isWellFormedCiphertext, stackSettings } from "../plan/credentials";
import { ROOT } from "./support/plan";

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** What the passphrase provider writes: v1:<base64 12-byte nonce>:<base64 ciphertext>. */
const ciphertext = () => `v1:${randomBytes(12).toString("base64")}:${randomBytes(40).toString("base64")}`;

/** The dev stack file with its placeholders replaced by well-formed ciphertext, then `edit` applied. */
function devStack(edit: (text: string) => string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-cred-"));
  dirs.push(dir);
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  const text = readFileSync(path.join(ROOT, "Pulumi.dev.yaml"), "utf8").replace(/secure: v1:placeholder[^\n]*/g, () => `secure: ${ciphertext()}`);
  writeFileSync(path.join(dir, "Pulumi.dev.yaml"), edit(text));
  return dir;
}

const noEnv = {};

test("ciphertext shapes: the passphrase provider's v1:nonce:ciphertext and a KMS's base64 pass; placeholders do not", () => {
  assert.ok(isWellFormedCiphertext(ciphertext()));
  assert.ok(isWellFormedCiphertext(randomBytes(64).toString("base64")));
  assert.ok(!isWellFormedCiphertext("v1:placeholder-set-with-pulumi-config-set-secret-digitalocean-token"));
  assert.ok(!isWellFormedCiphertext(`v1:${randomBytes(8).toString("base64")}:${randomBytes(40).toString("base64")}`), "a nonce is 12 bytes");
  assert.ok(!isWellFormedCiphertext("my-token"));
});

test("a dev stack with every credential set as a secret has no credential problem", () => {
  const dir = devStack((t) => t);
  assert.deepEqual(credentialProblems("dev", stackSettings("dev", dir), noEnv, dir), []);
});

test("each missing credential is named with its key and the environment variables that can stand in", () => {
  const dir = devStack((t) => t.replace(/\n  cloudflare:apiToken:\n    secure: [^\n]*/, "").replace(/\n  tailscale:apiKey:\n    secure: [^\n]*/, ""));
  const problems = credentialProblems("dev", stackSettings("dev", dir), noEnv, dir);
  assert.equal(problems.length, 2, problems.join("\n"));
  assert.match(problems[0]!, /^cloudflare:apiToken: is not set, .*CLOUDFLARE_API_TOKEN/);
  assert.match(problems[1]!, /^tailscale:apiKey: is not set, .*TAILSCALE_API_KEY or TAILSCALE_OAUTH_CLIENT_ID with TAILSCALE_OAUTH_CLIENT_SECRET/);
  // The providers read these variables instead.
  assert.deepEqual(credentialProblems("dev", stackSettings("dev", dir), { CLOUDFLARE_API_TOKEN: "t", TAILSCALE_API_KEY: "k" }, dir), []);
  assert.equal(credentialProblems("dev", stackSettings("dev", dir), { TAILSCALE_OAUTH_CLIENT_ID: "id" }, dir).length, 2, "an OAuth client needs its secret too");
});

test("a credential in plain text and a malformed secure value are named", () => {
  const dir = devStack((t) => t.replace(/\n  digitalocean:token:\n    secure: [^\n]*/, "\n  digitalocean:token: dop_v1_plain").replace(/(\n  cloudflare:apiToken:\n    secure: )[^\n]*/, "$1not-a-ciphertext"));
  const problems = credentialProblems("dev", stackSettings("dev", dir), noEnv, dir);
  assert.deepEqual(
    problems.map((p) => p.slice(0, p.indexOf(": "))),
    ["cloudflare:apiToken", "digitalocean:token"],
    problems.join("\n"),
  );
  assert.match(problems.join("\n"), /digitalocean:token: is in plain text/);
  assert.match(problems.join("\n"), /cloudflare:apiToken: its secure value is not a ciphertext/);
});

test("the local stack needs no credential", () => {
  assert.deepEqual(credentialProblems("local", stackSettings("local"), noEnv), []);
});

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { after, test } from "node:test";
import { adminPathProblem, parseUsersFile } from "../ops/users";
import { ROOT } from "./support/plan";

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), "hm-users-"));
  dirs.push(d);
  return d;
};

/**
 * A fake `docker` on PATH standing in for the engine and Dendrite's create-account (matrix-org/dendrite
 * v0.13.8 cmd/create-account/main.go: -passwordstdin, at least 8 characters, the access token in its
 * log line; a taken localpart is the register endpoint's M_USER_IN_USE). It records each argv and
 * DOCKER_HOST, and keeps the accounts in a file.
 */
function fakeDocker(dir: string): void {
  const script = `#!/usr/bin/env node
const fs = require("fs");
const dir = ${JSON.stringify(dir)};
const args = process.argv.slice(2);
fs.appendFileSync(dir + "/calls.log", JSON.stringify({ args, host: process.env.DOCKER_HOST || "" }) + "\\n");
if (args[0] === "ps") { process.stdout.write("c0ffee\\n"); process.exit(0); }
if (args[0] !== "exec" || args[2] !== "c0ffee" || args[3] !== "/usr/bin/create-account" || !args.includes("-passwordstdin")) process.exit(125);
const user = args[args.indexOf("-username") + 1];
const pw = fs.readFileSync(0, "utf8").trim();
if (pw.length < 8) { process.stderr.write("Specified password is invalid\\n"); process.exit(1); }
const db = dir + "/accounts.json";
const accounts = fs.existsSync(db) ? JSON.parse(fs.readFileSync(db, "utf8")) : {};
if (accounts[user]) { process.stderr.write('level=fatal msg="Failed to create the account: got HTTP 400 error from server: {\\\\"errcode\\\\":\\\\"M_USER_IN_USE\\\\",\\\\"error\\\\":\\\\"Desired user ID is already taken.\\\\"}"\\n'); process.exit(1); }
accounts[user] = { pw, admin: args.includes("-admin") };
fs.writeFileSync(db, JSON.stringify(accounts));
process.stderr.write('level=info msg="Created account: ' + user + ' (AccessToken: syt_secret_token_' + user + ')"\\n');
`;
  writeFileSync(path.join(dir, "docker"), script);
  chmodSync(path.join(dir, "docker"), 0o755);
}

function run(dir: string, args: string[]) {
  // tsx by path: the command runs in a scratch folder, as an operator would run it from anywhere.
  const tsx = pathToFileURL(path.join(ROOT, "node_modules/tsx/dist/loader.mjs")).href;
  const r = spawnSync(process.execPath, ["--import", tsx, path.join(ROOT, "ops/users.ts"), ...args], {
    cwd: dir,
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, PATH: `${dir}:${process.env.PATH}` },
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

const cloudOutputs = (tailnetIpv4: string) =>
  JSON.stringify({ target: "digitalocean", serverName: "example.org", nodes: { "hm-prod-1": { roles: ["manager", "edge"], tailnetIpv4: "100.88.0.1" }, "hm-prod-2": { roles: ["manager", "db"], tailnetIpv4 } } });

test("a users file is read whole, every mistake named by line", () => {
  assert.deepEqual(parseUsersFile("alice\n# the lab's admin\nbob admin\n\n"), [
    { localpart: "alice", admin: false },
    { localpart: "bob", admin: true },
  ]);
  assert.throws(() => parseUsersFile("Alice\ncarol boss\nalice\nalice\n"), (e: Error) => {
    assert.match(e.message, /line 1: "Alice" is not a Matrix localpart/);
    assert.match(e.message, /line 2: "carol boss" is not/);
    assert.match(e.message, /line 4: "alice" is listed twice/);
    return true;
  });
});

test("only the admin path: the local socket or ssh to a tailnet address", () => {
  assert.equal(adminPathProblem(undefined), undefined);
  assert.equal(adminPathProblem("unix:///var/run/docker.sock"), undefined);
  assert.equal(adminPathProblem("ssh://root@100.101.102.103"), undefined);
  assert.equal(adminPathProblem("ssh://root@[fd7a:115c:a1e0::1]"), undefined);
  for (const host of ["ssh://root@203.0.113.5", "ssh://root@10.110.0.3", "tcp://100.101.102.103:2375", "ssh://root@matrix.example.org", "https://matrix.example.org"]) {
    assert.match(adminPathProblem(host) ?? "", /refusing Docker host/, host);
  }
});

test("accounts are created over the VPN on the db node, passwords only on stdin and in a 0600 file, tokens withheld", () => {
  const dir = tmp();
  fakeDocker(dir);
  writeFileSync(path.join(dir, "outputs.json"), cloudOutputs("100.64.238.209"));
  writeFileSync(path.join(dir, "users.txt"), "alice\nbob admin\n");
  const r = run(dir, ["--stack", "prod", "--file", "users.txt", "--outputs", "outputs.json"]);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /2 created, 0 already there, 0 failed/);
  const creds = readFileSync(path.join(dir, "users-prod.credentials.tsv"), "utf8").trim().split("\n").map((l) => l.split("\t"));
  assert.equal(statSync(path.join(dir, "users-prod.credentials.tsv")).mode & 0o777, 0o600);
  assert.deepEqual(creds.map(([id]) => id), ["@alice:example.org", "@bob:example.org"]);
  const accounts = JSON.parse(readFileSync(path.join(dir, "accounts.json"), "utf8")) as Record<string, { pw: string; admin: boolean }>;
  assert.deepEqual(creds.map(([, pw]) => pw), [accounts.alice!.pw, accounts.bob!.pw], "the file holds the passwords the server got");
  assert.equal(accounts.bob!.admin, true);
  const calls = readFileSync(path.join(dir, "calls.log"), "utf8");
  assert.ok(calls.trim().split("\n").every((l) => (JSON.parse(l) as { host: string }).host === "ssh://root@100.64.238.209"));
  for (const [, pw] of creds) {
    assert.ok(!calls.includes(pw!), "no password in any argv");
    assert.ok(!r.out.includes(pw!), "no password on the terminal");
  }
  assert.ok(!r.out.includes("syt_secret_token"), "create-account's access token is never shown");

  // Run again with one more: the existing ones are reported, not failed.
  writeFileSync(path.join(dir, "users.txt"), "alice\ncarol\n");
  const again = run(dir, ["--stack", "prod", "--file", "users.txt", "--outputs", "outputs.json", "--out", "second.tsv"]);
  assert.equal(again.status, 0, again.out);
  assert.match(again.out, /exists {2}alice/);
  assert.match(again.out, /1 created, 1 already there, 0 failed/);
});

test("a db node whose recorded address is not on the VPN is refused before any Docker call", () => {
  const dir = tmp();
  fakeDocker(dir);
  writeFileSync(path.join(dir, "outputs.json"), cloudOutputs("203.0.113.166"));
  writeFileSync(path.join(dir, "users.txt"), "alice\n");
  const r = run(dir, ["--stack", "prod", "--file", "users.txt", "--outputs", "outputs.json"]);
  assert.equal(r.status, 2);
  assert.match(r.out, /refusing Docker host ssh:\/\/root@203\.0\.113\.166/);
  assert.throws(() => readFileSync(path.join(dir, "calls.log")));
});

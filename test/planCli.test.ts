import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { planStack } from "../plan/plan";
import { planToDisk, ROOT, runPlanCli, treeHash } from "./support/plan";

test("two plans of the same stack are byte-identical", () => {
  const a = planToDisk("local");
  const b = planToDisk("local");
  assert.equal(treeHash(a.dir), treeHash(b.dir));
  assert.ok(a.files.size >= 3);
});

test("the plan prints the resource tree with counts and writes the contract files", () => {
  const out = mkdtempSync(path.join(tmpdir(), "hm-plan-"));
  const r = runPlanCli(["--stack", "local", "--out", out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^pulumi:pulumi:Stack  hardened-matrix-local$/m);
  assert.match(r.stdout, /^  hardened-matrix:edge:Traefik  traefik\n(    .*\n)*    docker:index\/service:Service  traefik-service$/m);
  assert.match(r.stdout, /^\d+ resources:$/m);
  assert.match(r.stdout, /^ +5  docker:index\/service:Service$/m);
});

test("a bad stack file: exit non-zero, one line per problem, each naming its key", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  writeFileSync(
    path.join(dir, "Pulumi.broken.yaml"),
    [
      "config:",
      '  hardened-matrix:target: local',
      '  hardened-matrix:domain: "my server"',
      '  hardened-matrix:matrixHost: "@"',
      "  hardened-matrix:delegation: none",
      "  hardened-matrix:acmeCa: none",
      "  hardened-matrix:vpn: none",
      "  hardened-matrix:httpPort: 8080",
      "  hardened-matrix:httpsPort: 8443",
      "  hardened-matrix:maxUploadMb: 0",
      "  hardened-matrix:colour: blue",
      "",
    ].join("\n"),
  );
  const r = runPlanCli(["--stack", "broken", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines[0], 'plan of stack "broken" refused: invalid stack config (3 problems):');
  assert.deepEqual(lines.slice(1).map((l) => l.trim().split(":").slice(0, 2).join(":")).sort(), [
    "hardened-matrix:colour",
    "hardened-matrix:domain",
    "hardened-matrix:maxUploadMb",
  ]);
  assert.match(r.stderr, /hardened-matrix:domain: "my server" is not a DNS name/);
  assert.match(r.stderr, /hardened-matrix:maxUploadMb: 0 Too small/);
  assert.match(r.stderr, /hardened-matrix:colour: is not a known setting/);
});

test("a stack without a required key is refused as the Pulumi CLI refuses it, before the program runs", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  writeFileSync(path.join(dir, "Pulumi.nodomain.yaml"), "config:\n  hardened-matrix:target: local\n");
  const r = runPlanCli(["--stack", "nodomain", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^plan of stack "nodomain" refused: invalid stack config \(\d+ problems\):\n  hardened-matrix:domain: is required but not set .*"Stack 'nodomain' is missing configuration value 'domain'"/);
  // In the same run: what the program says of the rest (the defaults are a cloud stack's).
  assert.match(r.stderr, /hardened-matrix:httpPort: 80 is a privileged port/);
  assert.doesNotMatch(r.stderr, /example\.invalid/);
});

test("a stack file with three mistakes of different kinds reports all three in one run", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  const local = readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8");
  // A namespace typo (the CLI ignores it), a wrong type (the CLI refuses it), a rule across keys (the program refuses it).
  writeFileSync(
    path.join(dir, "Pulumi.three.yaml"),
    `${local}  hardened_matrix:presence: true\n  hardened-matrix:maxUploadMb: lots\n  hardened-matrix:turnMinPort: 50000\n  hardened-matrix:turnMaxPort: 40000\n`,
  );
  const r = runPlanCli(["--stack", "three", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1);
  const lines = r.stderr.trim().split("\n");
  assert.match(lines[0]!, /\(3 problems\)/);
  assert.match(r.stderr, /hardened_matrix:presence: is in the namespace "hardened_matrix", which nothing reads; .*\(did you mean hardened-matrix:presence\?\)/);
  assert.match(r.stderr, /hardened-matrix:maxUploadMb: "lots" is not of type 'integer'/);
  assert.match(r.stderr, /hardened-matrix:turnMinPort: 50000 must be below turnMaxPort \(40000\)/);
});

test("a schema problem does not hide the rules across the other keys", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  const local = readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8");
  writeFileSync(path.join(dir, "Pulumi.two.yaml"), `${local}  hardened-matrix:turnUserLifetime: forever\n  hardened-matrix:acmeEmail: not-an-email\n  hardened-matrix:region: fra1\n`);
  const r = runPlanCli(["--stack", "two", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /hardened-matrix:turnUserLifetime: "forever" must be a duration/);
  assert.match(r.stderr, /hardened-matrix:acmeEmail: "not-an-email" is not an email address/);
  assert.match(r.stderr, /hardened-matrix:region: target "local" has no region/);
  assert.match(r.stderr, /\(3 problems\)/);
});

test("an unknown stack is refused before anything runs", () => {
  const r = runPlanCli(["--stack", "nosuchstack", "--out", mkdtempSync(path.join(tmpdir(), "hm-plan-"))]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no stack file Pulumi\.nosuchstack\.yaml/);
});

test("nothing is registered when validation fails (only the stack itself exists)", async () => {
  const plan = await planStack("local", { "hardened-matrix:domain": "bad domain", "hardened-matrix:turnPort": 0 });
  assert.ok(plan.error);
  assert.deepEqual(plan.resources.map((r) => r.type), ["pulumi:pulumi:Stack"]);
});

test("a cloud stack whose backups need a Spaces bucket but give the provider no Spaces keys is refused, naming the key", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
  copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  const dev = readFileSync(path.join(ROOT, "Pulumi.dev.yaml"), "utf8");
  const withoutSpaces = dev.replace(/^  digitalocean:spaces(AccessId|SecretKey):\n    secure: .*\n/gm, "");
  assert.notEqual(withoutSpaces, dev);
  writeFileSync(path.join(dir, "Pulumi.nospaces.yaml"), withoutSpaces);
  const r = runPlanCli(["--stack", "nospaces", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /^  digitalocean:spacesAccessId: is not set, and the backups' Spaces bucket needs it/m);
  // Backups off: nothing needs the keys.
  writeFileSync(path.join(dir, "Pulumi.nobackup.yaml"), `${withoutSpaces}  hardened-matrix:backup: "off"\n`);
  assert.equal(runPlanCli(["--stack", "nobackup", "--config-dir", dir, "--out", path.join(dir, "out")]).status, 0);
});

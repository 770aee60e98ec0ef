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
  assert.match(r.stderr, /^plan of stack "nodomain" refused: invalid stack config \(1 problem\):\n  hardened-matrix:domain: is required but not set .*"Stack 'nodomain' is missing configuration value 'domain'"/);
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

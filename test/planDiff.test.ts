import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { appendFileSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { planToDisk, ROOT } from "./support/plan";

// The fork-PR view: two real offline plans of the local stack, the second with one service
// changed (Traefik's image, by stack config) and one rendered file edited, plus a secret file.

function planDiff(a: string, b: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "plan/diff.ts"), a, b, "local"], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const base = planToDisk("local");
const configDir = mkdtempSync(path.join(tmpdir(), "hm-config-"));
copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(configDir, "Pulumi.yaml"));
writeFileSync(path.join(configDir, "Pulumi.local.yaml"), `${readFileSync(path.join(ROOT, "Pulumi.local.yaml"), "utf8")}  hardened-matrix:images:\n    traefik: "traefik:v3.7.99"\n`);
const head = planToDisk("local", ["--config-dir", configDir]);

test("identical plans: no differences", () => {
  const r = planDiff(base.dir, base.dir);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^### local\n\nNo differences in resources or rendered files\.\n$/);
});

test("one service and one file differ: the service field by field, the file as a unified diff, a secret file masked", () => {
  appendFileSync(path.join(head.dir, "files/traefik-static/traefik.yml"), "# edited by the pull request\n");
  const secretFile = path.join(head.dir, "files/postgres-superuser-secret/postgres-superuser-password");
  const oldSecret = readFileSync(secretFile, "utf8");
  writeFileSync(secretFile, "LEAKED-IF-SHOWN\n", { mode: 0o600 });

  const r = planDiff(base.dir, head.dir);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\*\*Resources:\*\* 0 added, 0 removed, 1 changed\. \*\*Files:\*\* 0 added, 0 removed, 2 changed\./);
  assert.match(r.stdout, /- ✏️ `docker:index\/service:Service` `traefik-service`\n  - `inputs\.taskSpec\.containerSpec\.image`: `"traefik:v3\.7\.13"` → `"traefik:v3\.7\.99"`\n/);
  assert.equal(r.stdout.match(/✏️/g)?.length, 1, "only the one service changed");
  assert.match(r.stdout, /<summary>changed: `traefik-static\/traefik\.yml`<\/summary>\n\n```diff\n--- a\/traefik-static\/traefik\.yml\n\+\+\+ b\/traefik-static\/traefik\.yml\n@@ [^\n]+\n( [^\n]*\n)*\+# edited by the pull request\n```/);
  assert.match(r.stdout, /<summary>changed: `postgres-superuser-secret\/postgres-superuser-password` \(secret: content not shown\)<\/summary>/);
  assert.doesNotMatch(r.stdout, /LEAKED-IF-SHOWN/);
  assert.ok(!r.stdout.includes(oldSecret.trim()), "the old secret value is not shown either");
  assert.doesNotMatch(r.stdout, /\[secret\]|mock-secret-for-/, "no secret field is listed as changed");
});

test("a folder that is not a plan is refused", () => {
  const r = planDiff(base.dir, configDir);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /is not a plan folder \(no resources\.json\)/);
});

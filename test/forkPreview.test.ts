import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import { ROOT } from "./support/plan";

// preview.yml's fork job, run for real with bash: two checkouts (copies of this tree, the head
// with one setting changed), the job's own script (its `npm ci` lines replaced by linking the
// installed node_modules), and the comment it leaves for plan-comment.yml.

type Doc = Record<string, any>;
const job = (parse(readFileSync(path.join(ROOT, ".github/workflows/preview.yml"), "utf8")) as Doc).jobs["offline-plan"] as Doc;
const step = (job.steps as Doc[]).find((s) => typeof s.run === "string")!;
const work = mkdtempSync(path.join(tmpdir(), "hm-fork-"));
after(() => rmSync(work, { recursive: true, force: true }));

function checkout(name: string): string {
  const dir = path.join(work, name);
  cpSync(ROOT, dir, { recursive: true, filter: (src) => !/\/(node_modules|out|\.git)$/.test(src) });
  symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  symlinkSync(path.join(ROOT, "policy/node_modules"), path.join(dir, "policy/node_modules"));
  return dir;
}

test("the fork job's script plans base and head, diffs them, runs the pack, and writes the comment", () => {
  checkout("base");
  const head = checkout("head");
  const stackFile = path.join(head, "Pulumi.local.yaml");
  writeFileSync(stackFile, `${readFileSync(stackFile, "utf8")}  hardened-matrix:images:\n    traefik: "traefik:v3.7.99"\n`);

  const installs = /\bnpm ci( --prefix policy)? --no-audit --no-fund\b/g;
  assert.equal(String(step.run).match(installs)?.length, 3, "the script installs base, head and the head's pack");
  const script = String(step.run).replace(installs, "true");
  const r = spawnSync("bash", ["--noprofile", "--norc", "-eo", "pipefail", "-c", script], {
    cwd: work,
    env: { ...process.env, PR_NUMBER: "42" },
    encoding: "utf8",
    timeout: 300_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);

  assert.equal(readFileSync(path.join(work, "result/pr-number"), "utf8"), "42\n");
  const comment = readFileSync(path.join(work, "result/comment.md"), "utf8");
  assert.ok(comment.startsWith("<!-- hardened-matrix offline plan -->\n"), "plan-comment.yml finds its comment by this marker");
  assert.match(comment, /### local\n\n\*\*Resources:\*\* 0 added, 0 removed, 1 changed\./);
  assert.match(comment, /`inputs\.taskSpec\.containerSpec\.image`: `"traefik:v3\.7\.13"` → `"traefik:v3\.7\.99"`/);
  assert.match(comment, /### dev\n\nNo differences in resources or rendered files\./);
  assert.match(comment, /### prod\n\nNo differences in resources or rendered files\./);
  for (const stack of ["local", "dev", "prod"]) assert.match(comment, new RegExp(`${stack}: \\d+ policies over \\d+ resources, 0 violation\\(s\\)`));
  assert.doesNotMatch(comment, /mock-secret-for-|A plan failed/);
});

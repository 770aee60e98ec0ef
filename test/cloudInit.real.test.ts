import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { findTool, skipReason } from "./support/realTool";
import { planToDisk, STACKS } from "./support/plan";

// Every planned user-data file of every stack, checked by Debian's cloud-init itself.
const cloudInit = findTool("cloud-init", "cloud-init");
const dir = mkdtempSync(path.join(tmpdir(), "hm-cloudinit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function schema(text: string): { status: number | null; output: string } {
  const file = path.join(dir, `ud-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text, { mode: 0o600 });
  const r = spawnSync(cloudInit!, ["schema", "-c", file], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test("cloud-init schema refuses a malformed file (the check can fail)", { skip: cloudInit ? false : skipReason("cloud-init", "cloud-init") }, () => {
  const r = schema("#cloud-config\nruncmd: 5\nwrite_files:\n  - path: 3\n");
  assert.notEqual(r.status, 0, r.output);
  assert.match(r.output, /runcmd: 5 is not of type 'array'/);
});

for (const stack of STACKS) {
  test(`${stack}: every node's user data passes cloud-init schema`, { skip: cloudInit ? false : skipReason("cloud-init", "cloud-init") }, () => {
    const plan = planToDisk(stack);
    const files = [...plan.files].filter(([p]) => p.endsWith("/user-data.yaml"));
    if (plan.resources.some((r) => r.type === "digitalocean:index/droplet:Droplet")) assert.ok(files.length > 0, `${stack}: no user data planned`);
    for (const [p, text] of files) {
      const r = schema(text);
      assert.equal(r.status, 0, `${stack}/${p}: ${r.output}`);
      assert.match(r.output, /Valid cloud-config/);
    }
  });
}

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { ROOT } from "./support/plan";

// One supported Node.js everywhere: what the SDK declares, what package.json and the README say,
// what CI installs and what the workflows set up, and what runs these tests.

const major = (v: string) => Number(/(\d+)/.exec(v)?.[1]);
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { engines: { node: string } };
const sdk = JSON.parse(readFileSync(path.join(ROOT, "node_modules/@pulumi/pulumi/package.json"), "utf8")) as { engines?: { node?: string } };
const floor = major(pkg.engines.node);

test("package.json asks for at least the Node.js the Pulumi SDK declares", () => {
  assert.match(pkg.engines.node, /^>=\d+$/);
  assert.ok(floor >= major(sdk.engines?.node ?? ">=0"), `engines ${pkg.engines.node} below the SDK's ${sdk.engines?.node}`);
  assert.ok(floor >= 22, "Node.js 20 is past its end of life");
});

test("these tests run on a supported Node.js", () => {
  assert.ok(major(process.versions.node) >= floor, `running on ${process.versions.node}; .ci/run installs a newer one`);
});

test("CI installs and every workflow sets up a supported Node.js", () => {
  const ci = readFileSync(path.join(ROOT, ".ci/run"), "utf8");
  assert.ok(major(/^NODE_VERSION=(\S+)$/m.exec(ci)?.[1] ?? "0") >= floor);
  const dir = path.join(ROOT, ".github/workflows");
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".yml"))) {
    const jobs = (parse(readFileSync(path.join(dir, f), "utf8")) as { jobs: Record<string, { steps?: Array<{ uses?: string; with?: { "node-version"?: unknown } }> }> }).jobs;
    for (const [name, job] of Object.entries(jobs)) {
      for (const step of job.steps ?? []) {
        if (!step.uses?.startsWith("actions/setup-node@")) continue;
        assert.ok(major(String(step.with?.["node-version"])) >= floor, `${f} ${name}: node-version ${step.with?.["node-version"]}`);
      }
    }
  }
});

test("the README states the Node.js floor", () => {
  assert.match(readFileSync(path.join(ROOT, "README.md"), "utf8"), new RegExp(`Node\\.js ${floor} or newer`));
});

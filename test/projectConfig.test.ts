import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import { parse } from "yaml";
import { SettingsError } from "../components/settings";
import { loadProjectConfig, validateConfigValue } from "../plan/projectConfig";
import { readStackConfig } from "../plan/stackConfig";
import { ROOT, runPlanCli, STACKS } from "./support/plan";

// The checks the Pulumi CLI runs on Pulumi.yaml's `config:` and a stack's values before any
// program runs (pulumi/pulumi pkg/workspace/config.go, sdk/go/common/workspace/project.go),
// as the offline plan mirrors them.

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A project folder with this Pulumi.yaml `config:` and a stack "s" with these values. */
function project(config: string, stack: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), "hm-projcfg-"));
  dirs.push(dir);
  writeFileSync(path.join(dir, "Pulumi.yaml"), `name: p\nruntime: nodejs\nconfig:\n${config}`);
  writeFileSync(path.join(dir, "Pulumi.s.yaml"), `config:\n${stack}`);
  return dir;
}

function problems(config: string, stack = "  {}\n"): string[] {
  try {
    readStackConfig("s", project(config, stack));
  } catch (e) {
    assert.ok(e instanceof SettingsError, String(e));
    return e.problems;
  }
  return [];
}

test("the repository's Pulumi.yaml passes the CLI's project checks", () => {
  const loaded = loadProjectConfig(parse(readFileSync(path.join(ROOT, "Pulumi.yaml"), "utf8")));
  assert.deepEqual(loaded.problems, []);
  assert.ok(Object.keys(loaded.project.config).length > 10);
});

for (const stack of STACKS) {
  test(`the repository's Pulumi.${stack}.yaml passes the CLI's stack checks`, () => {
    assert.doesNotThrow(() => readStackConfig(stack));
  });
}

test("no key of the repository's Pulumi.yaml is declared secret with a default", () => {
  const { project: p } = loadProjectConfig(parse(readFileSync(path.join(ROOT, "Pulumi.yaml"), "utf8")));
  const trapped = Object.entries(p.config).filter(([, d]) => d.secret && d.default !== undefined);
  assert.deepEqual(trapped.map(([k]) => k), []);
});

test("a secret key with a default is refused for a stack that does not set it (pulumi/pulumi#21865)", () => {
  const config = '  token: { type: string, secret: true, default: "" }\n';
  const [p, ...rest] = problems(config);
  assert.deepEqual(rest, []);
  assert.match(p!, /^p:token: is declared secret with a default in Pulumi\.yaml; .*"Stack 's' with configuration key 'token' must be encrypted as it's secret"/);
  // Set encrypted in the stack, the default is never applied: the CLI accepts it.
  assert.deepEqual(problems(config, "  p:token:\n    secure: v1:abc\n"), []);
});

test("a plain-text value for a secret key is refused, naming the key", () => {
  const [p] = problems("  token: { type: string, secret: true }\n", "  p:token: hunter2\n");
  assert.match(p!, /^p:token: is declared secret in Pulumi\.yaml but set in plain text; .*must be encrypted as it's secret.*pulumi config set --secret token/);
  assert.deepEqual(problems("  token: { type: string, secret: true }\n", "  p:token:\n    secure: v1:abc\n"), []);
});

test("wrongly typed stack values are refused, each naming its key and type", () => {
  const config = [
    "  port: { type: integer, default: 80 }",
    "  flag: { type: boolean, default: false }",
    "  names: { type: array, items: { type: string }, default: [] }",
    "  label: { type: string, default: x }",
    "",
  ].join("\n");
  const got = problems(config, ['  p:port: "eighty"', "  p:flag: yes", "  p:names: [1, 2]", "  p:label: [a]", ""].join("\n"));
  assert.equal(got.length, 4, got.join("\n"));
  assert.match(got.find((p) => p.startsWith("p:port:"))!, /^p:port: "eighty" is not of type 'integer'/);
  assert.match(got.find((p) => p.startsWith("p:flag:"))!, /^p:flag: "yes" is not of type 'boolean'/);
  assert.match(got.find((p) => p.startsWith("p:names:"))!, /^p:names: \[1,2\] is not of type 'array<string>'/);
  assert.match(got.find((p) => p.startsWith("p:label:"))!, /^p:label: \["a"\] is not of type 'string'/);
  // What the CLI accepts: numbers and booleans given in YAML are text it can parse.
  assert.deepEqual(problems(config, ['  p:port: "8080"', "  p:flag: true", "  p:names: [a, b]", "  p:label: 42", ""].join("\n")), []);
});

test("a project key without default and without stack value is missing, as the CLI says", () => {
  assert.deepEqual(problems("  domain: { type: string }\n"), [
    `p:domain: is required but not set (Pulumi.yaml declares it without a default; the Pulumi CLI refuses the stack: "Stack 's' is missing configuration value 'domain'")`,
  ]);
  // So a secret key can only be optional by not being declared at all.
  assert.equal(problems("  token: { type: string, secret: true }\n").length, 1);
});

test("Pulumi.yaml itself: what Project.Validate and the project schema refuse", () => {
  const got = problems(
    [
      "  list: { type: array }",
      "  n: { type: integer, default: ten }",
      "  both: { type: string, default: a, value: b }",
      "  typo: { type: string, defualt: a }",
      "  kind: { type: float }",
      "  aws:region: { type: string, value: x }",
      "",
    ].join("\n"),
    "  p:list: []\n  p:typo: a\n  p:kind: 1\n",
  );
  const byKey = (k: string) => got.filter((p) => p.startsWith(`${k}: `));
  assert.match(byKey("p:list")[0]!, /declares an array without 'items'/);
  assert.match(byKey("p:n")[0]!, /the default in Pulumi\.yaml, "ten", is not of the declared type 'integer'/);
  assert.match(byKey("p:both")[0]!, /both a 'default' and a 'value'/);
  assert.match(byKey("p:typo")[0]!, /declares 'defualt', which is not allowed/);
  assert.match(byKey("p:kind")[0]!, /declares type "float"; allowed: string, integer, boolean, array, object/);
  assert.match(byKey("aws:region")[0]!, /not in the project's namespace, so Pulumi\.yaml must not give it a type/);
});

test("ValidateConfigValue's rules, case by case", () => {
  assert.ok(validateConfigValue("integer", undefined, "8080"));
  assert.ok(validateConfigValue("integer", undefined, "-3"));
  assert.ok(validateConfigValue("integer", undefined, 3));
  assert.ok(!validateConfigValue("integer", undefined, "1.5"));
  assert.ok(!validateConfigValue("integer", undefined, 1.5));
  assert.ok(validateConfigValue("boolean", undefined, "false"));
  assert.ok(!validateConfigValue("boolean", undefined, "True"));
  assert.ok(validateConfigValue("array", { type: "array", items: { type: "integer" } }, [[1, 2], []]));
  assert.ok(!validateConfigValue("array", undefined, []));
  assert.ok(validateConfigValue("object", undefined, { a: 1 }));
  assert.ok(!validateConfigValue("object", undefined, [1]));
});

test("npm run plan refuses a project the CLI would refuse, naming every key, before anything runs", () => {
  const dir = project('  token: { type: string, secret: true, default: "" }\n  port: { type: integer, default: 1 }\n', "  p:port: x\n");
  const r = runPlanCli(["--stack", "s", "--config-dir", dir, "--out", path.join(dir, "out")]);
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines[0], 'plan of stack "s" refused: invalid stack config (2 problems):');
  assert.deepEqual(lines.slice(1).map((l) => l.trim().split(":").slice(0, 2).join(":")).sort(), ["p:port", "p:token"]);
});

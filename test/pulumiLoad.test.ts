import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { ROOT } from "./support/plan";

// `pulumi up` loads index.ts through ts-node (with type checking) and calls the exported function
// (@pulumi/pulumi cmd/run/run.js). Do the same here, outside the tsx loader the tests run under.
const LOADER = `
const path = require("path");
const root = process.argv[1];
require(require.resolve("ts-node", { paths: [root] })).register({
  compiler: require.resolve("typescript", { paths: [root] }),
  project: path.join(root, "tsconfig.json"),
  skipProject: false,
  compilerOptions: {},
});
const program = require(path.join(root, "index.ts"));
process.stdout.write(typeof program);
`;

test("the Pulumi CLI's TypeScript loader compiles the program and finds its exported function", () => {
  const r = spawnSync(process.execPath, ["-e", LOADER, ROOT], { encoding: "utf8", timeout: 120_000, env: { ...process.env, NODE_OPTIONS: "" } });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "function");
});

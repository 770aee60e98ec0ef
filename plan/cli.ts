/**
 * The offline plan: `npm run plan -- --stack NAME [--out DIR]`.
 * Runs the real program under Pulumi's mock runtime with Pulumi.NAME.yaml: no cloud account,
 * no credentials, no Pulumi CLI. Writes DIR/NAME/{resources.json,outputs.json,files/}.
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { SettingsError } from "../components/settings";
import { writeFileSync } from "node:fs";
import { credentialProblems, stackSettings } from "./credentials";
import { planStack, renderTree, stableJson, writePlan } from "./plan";
import { PROJECT_DIR } from "./stackConfig";
import { renderSummary, summarize } from "./summary";

async function main(): Promise<number> {
  const { values } = parseArgs({
    // --config-dir reads Pulumi.yaml and Pulumi.<stack>.yaml from another folder (tests use it).
    options: { stack: { type: "string", short: "s" }, out: { type: "string", default: "out" }, "config-dir": { type: "string" } },
    allowPositionals: false,
  });
  if (!values.stack) {
    process.stderr.write("usage: npm run plan -- --stack NAME [--out DIR]   (stacks: local, dev, prod)\n");
    return 2;
  }
  const started = process.hrtime.bigint();
  const plan = await planStack(values.stack, {}, values["config-dir"] && path.resolve(values["config-dir"]));
  if (plan.error) {
    const e = plan.error;
    if (e instanceof SettingsError) {
      process.stderr.write(`plan of stack "${values.stack}" refused: ${e.message}\n`);
    } else {
      process.stderr.write(`plan of stack "${values.stack}" failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    }
    return 1;
  }
  const dir = writePlan(plan, path.resolve(values.out));
  const projectDir = values["config-dir"] ? path.resolve(values["config-dir"]) : PROJECT_DIR;
  const settings = stackSettings(values.stack, projectDir);
  const summary = summarize(plan, settings, credentialProblems(values.stack, settings, process.env, projectDir));
  writeFileSync(path.join(dir, "summary.json"), stableJson(summary));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(`${renderTree(plan)}\n\nwrote ${path.relative(process.cwd(), dir) || dir} in ${seconds.toFixed(1)}s\n\n${renderSummary(summary)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);

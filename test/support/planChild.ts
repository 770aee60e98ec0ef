/**
 * Plans a stack with config overrides in a child process (the Pulumi runtime is global state: one
 * program run per process) and returns what mesh tests compare across plans.
 * Run directly: node --import tsx test/support/planChild.ts STACK '<overrides JSON>'
 */
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { planStack, reveal, type PlannedFile } from "../../plan/plan";

export interface ChildPlan {
  error?: string;
  /** Inputs redacted, as in resources.json. */
  resources: Array<{ type: string; name: string; inputs: unknown }>;
  outputs: Record<string, unknown>;
  files: PlannedFile[];
  /** Wall time of planStack in the child, in milliseconds. */
  ms: number;
}

export function planInChild(stack: string, overrides: Record<string, unknown>): ChildPlan {
  const r = spawnSync(process.execPath, ["--import", "tsx", __filename, stack, JSON.stringify(overrides)], {
    cwd: path.resolve(__dirname, "../.."),
    encoding: "utf8",
    timeout: 300_000,
    maxBuffer: 512 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`planInChild ${stack} exited ${r.status}:\n${r.stderr}`);
  return JSON.parse(r.stdout) as ChildPlan;
}

if (require.main === module) {
  const [stack, overrides] = process.argv.slice(2);
  const started = process.hrtime.bigint();
  planStack(stack!, JSON.parse(overrides ?? "{}")).then((plan) => {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const out: ChildPlan = {
      ...(plan.error ? { error: String(plan.error) } : {}),
      resources: plan.resources.map((r) => ({ type: r.type, name: r.name, inputs: r.inputs })),
      outputs: reveal(plan.outputs) as Record<string, unknown>,
      files: plan.files,
      ms,
    };
    process.stdout.write(JSON.stringify(out));
  });
}

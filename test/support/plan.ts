import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { PlannedResource } from "../../plan/plan";

export const ROOT = path.resolve(__dirname, "../..");
export const STACKS = readdirSync(ROOT)
  .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
  .filter((s): s is string => s !== undefined)
  .sort();

export interface PlanOnDisk {
  dir: string;
  resources: PlannedResource[];
  outputs: Record<string, unknown>;
  files: Map<string, string>;
}

function listFiles(dir: string, prefix = ""): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? listFiles(full, `${prefix}${name}/`) : [`${prefix}${name}`];
  });
}

/** Runs `npm run plan` exactly as a user does (own process: mocks are per process). */
export function runPlanCli(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "plan/cli.ts"), ...args], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function planToDisk(stack: string, extraArgs: string[] = []): PlanOnDisk {
  const out = mkdtempSync(path.join(tmpdir(), "hm-plan-"));
  const r = runPlanCli(["--stack", stack, "--out", out, ...extraArgs]);
  if (r.status !== 0) throw new Error(`plan ${stack} exited ${r.status}:\n${r.stderr}`);
  const dir = path.join(out, stack);
  const files = new Map(listFiles(path.join(dir, "files")).map((f) => [f, readFileSync(path.join(dir, "files", f), "utf8")]));
  return {
    dir,
    resources: JSON.parse(readFileSync(path.join(dir, "resources.json"), "utf8")),
    outputs: JSON.parse(readFileSync(path.join(dir, "outputs.json"), "utf8")),
    files,
  };
}

export function treeHash(dir: string): string {
  return execFileSync("sh", ["-c", "find . -type f | sort | xargs sha256sum"], { cwd: dir, encoding: "utf8" });
}

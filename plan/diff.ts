/**
 * The difference between two offline plans, for a pull request without cloud credentials:
 * `npm run plan:diff -- A B` where A and B are plan folders written by `npm run plan` (e.g.
 * base/out/dev and head/out/dev). Prints Markdown: resources added, removed and changed (field
 * by field), then files added, removed and changed (unified diff). Secrets stay masked:
 * resources.json already holds "[secret]" in their place, and a file the plan wrote as secret
 * (mode 0600) is reported as changed without its content.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import * as path from "node:path";
import type { PlannedResource } from "./plan";

export interface PlanDir {
  resources: PlannedResource[];
  /** `<resource>/<file>` → absolute path */
  files: Map<string, string>;
}

const MAX_FIELDS = 25;
const MAX_VALUE = 120;
const MAX_FILE_LINES = 200;

function listFiles(dir: string, prefix = ""): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? listFiles(full, `${prefix}${name}/`) : [`${prefix}${name}`];
  });
}

export function readPlanDir(dir: string): PlanDir {
  const file = path.join(dir, "resources.json");
  if (!existsSync(file)) throw new Error(`${dir} is not a plan folder (no resources.json): pass out/<stack> as written by npm run plan`);
  const resources = JSON.parse(readFileSync(file, "utf8")) as PlannedResource[];
  const files = new Map(listFiles(path.join(dir, "files")).map((f) => [f, path.join(dir, "files", f)]));
  return { resources, files };
}

/** Leaf values by path: `inputs.taskSpec.containerSpec.image` → "traefik:v3.7.13". */
function flatten(value: unknown, prefix: string, out: Map<string, string>): Map<string, string> {
  if (value !== null && typeof value === "object" && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(value));
  return out;
}

const short = (s: string | undefined): string => (s === undefined ? "(none)" : s.length > MAX_VALUE ? `${s.slice(0, MAX_VALUE)}…` : s);
const code = (s: string): string => `\`${s.replace(/`/g, "'")}\``;

function resourceChanges(a: PlannedResource, b: PlannedResource): string[] {
  const before = flatten({ inputs: a.inputs, options: a.options, parent: a.parent, provider: a.provider }, "", new Map());
  const after = flatten({ inputs: b.inputs, options: b.options, parent: b.parent, provider: b.provider }, "", new Map());
  const keys = [...new Set([...before.keys(), ...after.keys()])].sort();
  const changed = keys.filter((k) => before.get(k) !== after.get(k));
  const lines = changed.slice(0, MAX_FIELDS).map((k) => `  - ${code(k)}: ${code(short(before.get(k)))} → ${code(short(after.get(k)))}`);
  if (changed.length > MAX_FIELDS) lines.push(`  - … and ${changed.length - MAX_FIELDS} more fields`);
  return lines;
}

/** A file the plan wrote as secret (0600) is never shown. */
function isSecretFile(file: string): boolean {
  return (statSync(file).mode & 0o077) === 0;
}

function unifiedDiff(a: string | undefined, b: string | undefined, name: string): string {
  const r = spawnSync("diff", ["-u", "--label", `a/${name}`, "--label", `b/${name}`, a ?? "/dev/null", b ?? "/dev/null"], { encoding: "utf8" });
  if (r.status !== 1 || r.error) return "(content differs; diff(1) unavailable)";
  const lines = r.stdout.trimEnd().split("\n");
  const shown = lines.slice(0, MAX_FILE_LINES);
  if (lines.length > MAX_FILE_LINES) shown.push(`… ${lines.length - MAX_FILE_LINES} more lines`);
  // A fence longer than any backtick run in the text, so file content cannot close it.
  const fence = "`".repeat(Math.max(3, ...[...r.stdout.matchAll(/`+/g)].map((m) => m[0].length + 1)));
  return `${fence}diff\n${shown.join("\n")}\n${fence}`;
}

/** Markdown describing how plan `b` differs from plan `a`; `title` names them. */
export function diffPlans(a: PlanDir, b: PlanDir, title: string): string {
  const byUrn = (p: PlanDir) => new Map(p.resources.map((r) => [r.urn, r]));
  const before = byUrn(a);
  const after = byUrn(b);
  const label = (r: PlannedResource) => `${code(r.type)} ${code(r.name)}`;
  const added = [...after.values()].filter((r) => !before.has(r.urn));
  const removed = [...before.values()].filter((r) => !after.has(r.urn));
  const changed = [...after.values()].filter((r) => before.has(r.urn) && JSON.stringify(before.get(r.urn)) !== JSON.stringify(r));

  const names = [...new Set([...a.files.keys(), ...b.files.keys()])].sort();
  const fileAdded = names.filter((n) => !a.files.has(n));
  const fileRemoved = names.filter((n) => !b.files.has(n));
  const fileChanged = names.filter((n) => a.files.has(n) && b.files.has(n) && !readFileSync(a.files.get(n)!).equals(readFileSync(b.files.get(n)!)));

  const out: string[] = [`### ${title}`, ""];
  if (added.length + removed.length + changed.length + fileAdded.length + fileRemoved.length + fileChanged.length === 0) {
    out.push("No differences in resources or rendered files.");
    return `${out.join("\n")}\n`;
  }
  out.push(`**Resources:** ${added.length} added, ${removed.length} removed, ${changed.length} changed. **Files:** ${fileAdded.length} added, ${fileRemoved.length} removed, ${fileChanged.length} changed.`, "");
  for (const r of added) out.push(`- ➕ ${label(r)}`);
  for (const r of removed) out.push(`- ➖ ${label(r)}`);
  for (const r of changed) out.push(`- ✏️ ${label(r)}`, ...resourceChanges(before.get(r.urn)!, r));
  if (added.length + removed.length + changed.length > 0) out.push("");
  for (const n of [...fileAdded, ...fileRemoved, ...fileChanged]) {
    const pa = a.files.get(n);
    const pb = b.files.get(n);
    const kind = pa === undefined ? "added" : pb === undefined ? "removed" : "changed";
    const secret = [pa, pb].some((p) => p !== undefined && isSecretFile(p));
    out.push(`<details><summary>${kind}: ${code(n)}${secret ? " (secret: content not shown)" : ""}</summary>`, "");
    if (!secret) out.push(unifiedDiff(pa, pb, n), "");
    out.push("</details>", "");
  }
  return `${out.join("\n").trimEnd()}\n`;
}

if (require.main === module) {
  const [a, b, title] = process.argv.slice(2);
  if (!a || !b) {
    process.stderr.write("usage: npm run plan:diff -- BASE_PLAN_DIR HEAD_PLAN_DIR [TITLE]\n");
    process.exit(2);
  }
  try {
    process.stdout.write(diffPlans(readPlanDir(a), readPlanDir(b), title ?? `${a} → ${b}`));
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  }
}

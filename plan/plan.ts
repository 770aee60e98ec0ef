import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { isSecretLeaf, runUnderMocks, type RecordedResource } from "./mockRuntime";
import { SettingsError } from "../components/settings";
import { readStackConfig, type StackConfig } from "./stackConfig";

/** One entry of resources.json (the contract reviewers and tests rely on): a recorded resource with secrets redacted. */
export type PlannedResource = RecordedResource;

export interface PlannedFile {
  /** `<resource name>/<file name>` */
  path: string;
  content: string;
  secret: boolean;
}

export interface Plan {
  stack: string;
  resources: PlannedResource[];
  /** Inputs with secrets in place (mock values), for files and for tests that need them. */
  rawInputs: Map<string, unknown>;
  files: PlannedFile[];
  outputs: Record<string, unknown>;
  error?: unknown;
}

/** Replaces every secret leaf with "[secret]", leaf by leaf. */
export function redact(value: unknown): unknown {
  if (isSecretLeaf(value)) return "[secret]";
  if (Array.isArray(value)) return value.map(redact);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(v)]));
  }
  return value;
}

/** Removes the secret wrappers, keeping the (mock) values. */
export function reveal(value: unknown): unknown {
  if (isSecretLeaf(value)) return reveal(value.secret);
  if (Array.isArray(value)) return value.map(reveal);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reveal(v)]));
  }
  return value;
}

function containsSecret(value: unknown): boolean {
  if (isSecretLeaf(value)) return true;
  if (Array.isArray(value)) return value.some(containsSecret);
  if (value !== null && typeof value === "object") return Object.values(value).some(containsSecret);
  return false;
}

/** JSON with object keys sorted, so two plans of the same program are byte-identical. */
export function stableJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return `${JSON.stringify(sort(value), null, 2)}\n`;
}

type Inputs = Record<string, unknown>;
type Mount = { configId?: string; secretId?: string; fileName?: string };

/** Where each docker config/secret is mounted, by id: gives the file its real name. */
function mountedFileNames(resources: RecordedResource[], raw: Map<string, unknown>): Map<string, string> {
  const names = new Map<string, string>();
  for (const r of resources) {
    if (r.type !== "docker:index/service:Service") continue;
    const spec = ((raw.get(r.urn) as Inputs).taskSpec as Inputs | undefined)?.containerSpec as Inputs | undefined;
    for (const m of [...((spec?.configs as Mount[]) ?? []), ...((spec?.secrets as Mount[]) ?? [])]) {
      const id = m.configId ?? m.secretId;
      if (id && m.fileName && !names.has(id)) names.set(id, path.posix.basename(m.fileName));
    }
  }
  return names;
}

function extractFiles(resources: RecordedResource[], raw: Map<string, unknown>): PlannedFile[] {
  const mounted = mountedFileNames(resources, raw);
  const files: PlannedFile[] = [];
  const add = (r: RecordedResource, fileName: string, content: unknown) => {
    if (typeof content !== "string") return;
    files.push({ path: `${r.name}/${fileName}`, content, secret: containsSecret(r.inputs) });
  };
  for (const r of resources) {
    const inputs = raw.get(r.urn) as Inputs;
    switch (r.type) {
      case "docker:index/serviceConfig:ServiceConfig":
      case "docker:index/secret:Secret": {
        const name = (r.id && mounted.get(r.id)) ?? String(inputs.name ?? r.name);
        add(r, name, Buffer.from(String(inputs.data ?? ""), "base64").toString("utf8"));
        break;
      }
      case "digitalocean:index/droplet:Droplet":
        add(r, "user-data.yaml", inputs.userData);
        break;
      case "tailscale:index/acl:Acl":
        add(r, "policy.json", inputs.acl);
        break;
      case "command:local:Command":
      case "command:remote:Command":
        add(r, "create.sh", inputs.create);
        add(r, "delete.sh", inputs.delete);
        // A script sent on stdin, and every file it embeds as a heredoc named HM_FILE_<file name>.
        add(r, "stdin.sh", inputs.stdin);
        if (typeof inputs.stdin === "string") {
          for (const m of inputs.stdin.matchAll(/<<'HM_FILE_([A-Za-z0-9._-]+)'\n([\s\S]*?\n)HM_FILE_\1\n/g)) add(r, m[1]!, m[2]);
        }
        break;
    }
  }
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

/** Runs the real program for `stack` under mocks with that stack's config. */
export async function planStack(stack: string, overrides: Record<string, unknown> = {}, configDir?: string): Promise<Plan> {
  let config: StackConfig;
  try {
    config = readStackConfig(stack, configDir, overrides);
  } catch (e) {
    // What the Pulumi CLI would refuse before running the program: nothing is registered.
    if (e instanceof SettingsError) return { stack, resources: [], rawInputs: new Map(), files: [], outputs: {}, error: e };
    throw e;
  }
  // The program is loaded only now, after the mocks: a module-level resource would otherwise escape them.
  const run = await runUnderMocks(stack, config, async () => {
    const program: () => Promise<Record<string, unknown>> = require("../index");
    return program();
  });
  const rawInputs = new Map(run.resources.map((r) => [r.urn, reveal(r.inputs)]));
  return {
    stack,
    resources: run.resources.map((r) => ({ ...r, inputs: redact(r.inputs) })),
    rawInputs,
    files: extractFiles(run.resources, rawInputs),
    outputs: run.outputs,
    error: run.error,
  };
}

/** The resource tree (type and name, nested by parent) and counts by type. */
export function renderTree(plan: Plan): string {
  const children = new Map<string, PlannedResource[]>();
  for (const r of plan.resources) {
    const list = children.get(r.parent) ?? [];
    list.push(r);
    children.set(r.parent, list);
  }
  const lines: string[] = [];
  const walk = (parent: string, depth: number) => {
    for (const r of children.get(parent) ?? []) {
      const flags = [r.options.protect ? "protected" : "", r.options.retainOnDelete ? "retained" : ""].filter(Boolean);
      lines.push(`${"  ".repeat(depth)}${r.type}  ${r.name}${flags.length ? `  [${flags.join(", ")}]` : ""}`);
      walk(r.urn, depth + 1);
    }
  };
  walk("", 0);
  const counts = new Map<string, number>();
  for (const r of plan.resources) counts.set(r.type, (counts.get(r.type) ?? 0) + 1);
  lines.push("", `${plan.resources.length} resources:`);
  for (const [type, n] of [...counts].sort((a, b) => a[0].localeCompare(b[0]))) lines.push(`  ${String(n).padStart(3)}  ${type}`);
  lines.push(`${plan.files.length} files`);
  return lines.join("\n");
}

/** Writes DIR/<stack>/{resources.json, outputs.json, files/...}, replacing an earlier plan. */
export function writePlan(plan: Plan, outDir: string): string {
  const dir = path.join(outDir, plan.stack);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, "files"), { recursive: true });
  writeFileSync(path.join(dir, "resources.json"), stableJson(plan.resources));
  writeFileSync(path.join(dir, "outputs.json"), stableJson(redact(plan.outputs)));
  for (const file of plan.files) {
    const target = path.join(dir, "files", file.path);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, file.content, { mode: file.secret ? 0o600 : 0o644 });
  }
  return dir;
}

import { readFileSync, existsSync } from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";

export const PROJECT_DIR = path.resolve(__dirname, "..");

export interface StackConfig {
  /** Full keys ("hardened-matrix:domain") to string values, as the Pulumi CLI hands them to a program. */
  values: Record<string, string>;
  /** Keys whose values are secret (`secure:` in the stack file). */
  secretKeys: string[];
}

type ConfigDeclaration = { type?: string; default?: unknown; secret?: boolean } | string | number | boolean;

function encode(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** A secret the plan cannot decrypt (and must not): a stable stand-in that names its key. */
export function securePlaceholder(key: string): string {
  return `mock-secret-for-${key.replace(/[^A-Za-z0-9]+/g, "-")}`;
}

/**
 * Builds the config the Pulumi CLI would pass for a stack: project defaults from Pulumi.yaml,
 * overridden by Pulumi.<stack>.yaml. `secure:` values are never decrypted.
 */
export function readStackConfig(stack: string, projectDir = PROJECT_DIR, overrides: Record<string, unknown> = {}): StackConfig {
  const project = parse(readFileSync(path.join(projectDir, "Pulumi.yaml"), "utf8")) as { name: string; config?: Record<string, ConfigDeclaration> };
  const stackFile = path.join(projectDir, `Pulumi.${stack}.yaml`);
  if (!existsSync(stackFile)) {
    throw new Error(`no stack file ${path.relative(process.cwd(), stackFile) || stackFile}: stacks are Pulumi.<name>.yaml next to Pulumi.yaml`);
  }
  const stackDoc = (parse(readFileSync(stackFile, "utf8")) ?? {}) as { config?: Record<string, unknown> };

  const values: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [key, decl] of Object.entries(project.config ?? {})) {
    const fullKey = key.includes(":") ? key : `${project.name}:${key}`;
    const value = typeof decl === "object" && decl !== null ? decl.default : decl;
    if (value !== undefined) values[fullKey] = encode(value);
  }
  const stackValues = { ...(stackDoc.config ?? {}), ...overrides };
  for (const [key, value] of Object.entries(stackValues)) {
    const fullKey = key.includes(":") ? key : `${project.name}:${key}`;
    if (value === undefined) {
      delete values[fullKey];
    } else if (value !== null && typeof value === "object" && !Array.isArray(value) && "secure" in value) {
      values[fullKey] = securePlaceholder(fullKey);
      secretKeys.push(fullKey);
    } else {
      values[fullKey] = encode(value);
    }
  }
  return { values, secretKeys };
}

import { readFileSync, existsSync } from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { SettingsError } from "../components/settings";
import { fullKey, loadProjectConfig, mergeStackConfig, stackValue, type StackValue } from "./projectConfig";

export const PROJECT_DIR = path.resolve(__dirname, "..");

export interface StackConfig {
  /** Full keys ("hardened-matrix:domain") to string values, as the Pulumi CLI hands them to a program. */
  values: Record<string, string>;
  /** Keys whose values are secret (`secure:` in the stack file). */
  secretKeys: string[];
}

/** A secret the plan cannot decrypt (and must not): a stable stand-in that names its key. */
export function securePlaceholder(key: string): string {
  return `mock-secret-for-${key.replace(/[^A-Za-z0-9]+/g, "-")}`;
}

/**
 * Builds the config the Pulumi CLI would pass for a stack: Pulumi.<stack>.yaml over the project
 * defaults of Pulumi.yaml, checked the way the CLI checks them before it runs a program (see
 * projectConfig.ts); a problem there throws a SettingsError naming each key. `secure:` values are
 * never decrypted. `overrides` act as extra stack-file entries (undefined removes one).
 */
export function readStackConfig(stack: string, projectDir = PROJECT_DIR, overrides: Record<string, unknown> = {}): StackConfig {
  const loaded = loadProjectConfig(parse(readFileSync(path.join(projectDir, "Pulumi.yaml"), "utf8")));
  const stackFile = path.join(projectDir, `Pulumi.${stack}.yaml`);
  if (!existsSync(stackFile)) {
    throw new Error(`no stack file ${path.relative(process.cwd(), stackFile) || stackFile}: stacks are Pulumi.<name>.yaml next to Pulumi.yaml`);
  }
  const stackDoc = (parse(readFileSync(stackFile, "utf8")) ?? {}) as { config?: Record<string, unknown> };
  const name = loaded.project.name;

  const given = new Map<string, StackValue>();
  for (const [key, value] of Object.entries({ ...(stackDoc.config ?? {}), ...overrides })) {
    const k = fullKey(name, key);
    if (value === undefined) given.delete(k);
    else given.set(k, stackValue(value, securePlaceholder(k)));
  }
  const merged = mergeStackConfig(stack, loaded.project, given);
  const problems = [...loaded.problems, ...merged.problems];
  if (problems.length > 0) throw new SettingsError(problems);

  const values: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [k, v] of merged.values) {
    values[k] = v.text;
    if (v.secure) secretKeys.push(k);
  }
  return { values, secretKeys };
}

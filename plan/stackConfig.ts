import { readFileSync, existsSync } from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { PROJECT, SettingsError, settingsFromConfig } from "../components/settings";
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
  const problems = [...loaded.problems, ...merged.problems, ...namespaceProblems(name, [...given.keys()])];

  const values: Record<string, string> = {};
  const secretKeys: string[] = [];
  for (const [k, v] of merged.values) {
    values[k] = v.text;
    if (v.secure) secretKeys.push(k);
  }
  if (problems.length > 0) {
    // The program's own rules apply to this project's stack files only (tests load other projects).
    throw new SettingsError(name === PROJECT ? [...problems, ...programProblems(stack, values, secretKeys, problems)] : problems);
  }
  return { values, secretKeys };
}

/** Config namespaces a stack may use: this project's, the providers it depends on, and the engine's own. */
export function knownNamespaces(projectName: string): string[] {
  const pkg = JSON.parse(readFileSync(path.join(PROJECT_DIR, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
  const providers = Object.keys(pkg.dependencies ?? {})
    .filter((d) => d.startsWith("@pulumi/") && d !== "@pulumi/pulumi")
    .map((d) => d.slice("@pulumi/".length));
  return [projectName, ...providers.sort(), "pulumi"];
}

/**
 * A key in no namespace the program or a provider reads is ignored by the CLI and by everything
 * else: a typo there (`hardened_matrix:domain`) would surface only as a missing setting.
 */
function namespaceProblems(projectName: string, keys: string[]): string[] {
  const known = knownNamespaces(projectName);
  const problems: string[] = [];
  for (const key of keys) {
    const namespace = key.split(":", 1)[0]!;
    if (known.includes(namespace)) continue;
    const own = `${projectName}:${key.slice(namespace.length + 1)}`;
    const looksOwn = namespace.replace(/[^a-z0-9]/gi, "").toLowerCase() === projectName.replace(/[^a-z0-9]/gi, "").toLowerCase();
    problems.push(
      `${key}: is in the namespace "${namespace}", which nothing reads; allowed: ${known.map((n) => `${n}:`).join(", ")}${looksOwn ? ` (did you mean ${own}?)` : ""}`,
    );
  }
  return problems;
}

/**
 * What the program itself would say about the same values, so that every problem of a stack file
 * shows in one run. Keys the CLI-level checks already named are left out of that pass.
 */
function programProblems(stack: string, values: Record<string, string>, secretKeys: string[], earlier: string[]): string[] {
  const named = new Set(earlier.map((p) => p.slice(0, p.indexOf(": "))));
  const usable = Object.fromEntries(Object.entries(values).filter(([k]) => !named.has(k)));
  try {
    settingsFromConfig(stack, usable, (k) => secretKeys.includes(k), { spacesKeysInEnv: Boolean(process.env.SPACES_ACCESS_KEY_ID && process.env.SPACES_SECRET_ACCESS_KEY) });
    return [];
  } catch (e) {
    if (!(e instanceof SettingsError)) throw e;
    return e.problems.filter((p) => !named.has(p.slice(0, p.indexOf(": "))));
  }
}

import assert from "node:assert/strict";
import { decodeConfigValue, parseSettings, SettingsError, type Settings } from "../../components/settings";
import { readStackConfig } from "../../plan/stackConfig";

/** The settings a stack file yields, through the path the CLI takes (Pulumi.yaml defaults + stack file + overrides). */
export function settingsFor(stack: string, overrides: Record<string, unknown> = {}): Settings {
  const { values, secretKeys } = readStackConfig(stack, undefined, overrides);
  const raw: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(values)) {
    // Secret strings stay strings, as settingsFromConfig keeps them.
    if (key.startsWith("hardened-matrix:")) raw[key.slice("hardened-matrix:".length)] = secretKeys.includes(key) ? value : decodeConfigValue(value);
  }
  return parseSettings(stack, raw, new Set(secretKeys));
}

/** Every problem the settings report; [] when they are accepted. */
export function problemsOf(stack: string, overrides: Record<string, unknown>): string[] {
  try {
    settingsFor(stack, overrides);
  } catch (e) {
    assert.ok(e instanceof SettingsError, `expected a SettingsError, got ${String(e)}`);
    return e.problems;
  }
  return [];
}

/** Every problem the settings report; fails the test when they are accepted. */
export function problemsFor(stack: string, overrides: Record<string, unknown>): string[] {
  const problems = problemsOf(stack, overrides);
  if (problems.length === 0) assert.fail("the settings were accepted");
  return problems;
}

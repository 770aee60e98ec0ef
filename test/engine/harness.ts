/**
 * Runs the real program through Pulumi's own engine (the CLI built by build-engine.sh) over the
 * simulated providers, with a local file backend and a passphrase, in a directory of its own.
 *
 * The Node.js language host cannot be had from the Go module proxy (403 for every version), so the
 * program runs as an Automation API inline program: this process serves the language runtime and
 * runs index.ts itself; the CLI connects to it (`--client`) and does everything else (state, steps,
 * diffs, providers, protect). One operation per process: the program's modules are loaded once.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { LocalWorkspace, PulumiCommand, type Stack } from "@pulumi/pulumi/automation";
import { parse, stringify } from "yaml";
import { securePlaceholder } from "../../plan/stackConfig";
import { PACKAGES } from "./sim/provider";

export const REPO = path.resolve(__dirname, "..", "..");
const PROJECT = "hardened-matrix";

/**
 * Where the program (index.ts, components/, Pulumi.yaml and the stack files) is loaded from: this
 * tree, or HM_PROGRAM_DIR (drills run an older program from a `git worktree` of another ref, with
 * this tree's harness and simulated providers).
 */
export function programDir(): string {
  return process.env.HM_PROGRAM_DIR ? path.resolve(process.env.HM_PROGRAM_DIR) : REPO;
}
/** Only encrypts placeholders in a throw-away backend. */
const PASSPHRASE = "hardened-matrix-simulated-cloud";

/** The engine's bin directory if it is built (no build here), else undefined. */
export function builtEngine(): string | undefined {
  try {
    const out = execFileSync(path.join(REPO, "test/engine/build-engine.sh"), ["--check"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return out || undefined;
  } catch {
    return undefined;
  }
}

/** Builds the engine if needed (minutes, once per version) and returns its bin directory. */
export function buildEngine(): string {
  return execFileSync(path.join(REPO, "test/engine/build-engine.sh"), [], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}

export interface Sandbox {
  /** Everything lives here: project/, state/, home/, plugins/, cloud.json. */
  dir: string;
  stack: string;
  /** Real mode: the private Docker engine (unix:///path/docker.sock) docker resources and commands go to (sim/real/). */
  dockerHost?: string;
}

function paths(dir: string) {
  return {
    project: path.join(dir, "project"),
    state: path.join(dir, "state"),
    home: path.join(dir, "home"),
    plugins: path.join(dir, "plugins"),
    cloud: path.join(dir, "cloud.json"),
  };
}

/** `pulumi-resource-<name>` executables that serve the simulated provider with tsx. */
function writePlugins(dir: string): Array<{ name: string; path: string }> {
  const tsx = path.join(REPO, "node_modules/tsx/dist/loader.mjs");
  const entry = path.join(REPO, "test/engine/sim/provider.ts");
  return PACKAGES.map((name): { name: string; path: string } => {
    const d = path.join(dir, name);
    mkdirSync(d, { recursive: true });
    const bin = path.join(d, `pulumi-resource-${name}`);
    writeFileSync(bin, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} --import ${JSON.stringify(tsx)} ${JSON.stringify(entry)} ${name} "$@"\n`);
    chmodSync(bin, 0o755);
    return { name, path: d };
  }).concat(dynamicProviderPlugin(dir));
}

/**
 * `pulumi-resource-pulumi-nodejs`: the SDK's own dynamic-provider host (the program's
 * `pulumi.dynamic.Resource`s, e.g. Headscale's keys), as the SDK's script of that name starts it,
 * but from this repository's node_modules (the engine starts plugins in the sandbox's project).
 */
function dynamicProviderPlugin(dir: string): { name: string; path: string } {
  const d = path.join(dir, "pulumi-nodejs");
  mkdirSync(d, { recursive: true });
  const bin = path.join(d, "pulumi-resource-pulumi-nodejs");
  const host = path.join(REPO, "node_modules/@pulumi/pulumi/cmd/dynamic-provider/index.js");
  // netPreload.ts: what the program dials in the simulated cloud (Headscale) reaches sim/net.ts.
  const tsx = path.join(REPO, "node_modules/tsx/dist/loader.mjs");
  const preload = path.join(REPO, "test/engine/sim/netPreload.ts");
  writeFileSync(bin, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} --import ${JSON.stringify(tsx)} --import ${JSON.stringify(preload)} ${JSON.stringify(host)} "$@"\n`);
  chmodSync(bin, 0o755);
  return { name: "pulumi-nodejs", path: d };
}

export function sandboxEnv(dir: string, dockerHost?: string): Record<string, string> {
  const p = paths(dir);
  return {
    PULUMI_BACKEND_URL: `file://${p.state}`,
    PULUMI_CONFIG_PASSPHRASE: PASSPHRASE,
    PULUMI_HOME: p.home,
    PULUMI_SKIP_UPDATE_CHECK: "true",
    // Only the project's plugins (the simulated ones): nothing from PATH, nothing downloaded.
    PULUMI_IGNORE_AMBIENT_PLUGINS: "true",
    PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    PULUMI_SKIP_CONFIRMATIONS: "true",
    HM_SIM_CLOUD: p.cloud,
    ...(dockerHost ? { HM_REAL_DOCKER_HOST: dockerHost, DOCKER_HOST: dockerHost } : {}),
  };
}

/**
 * The stack's config as the stack file gives it, with `overrides` on top (undefined removes a key):
 * plain values are written to the stack file as they are; `secure:` values (placeholders in the
 * repository, not ciphertexts) are set with the passphrase as secrets of placeholder value, the
 * same stand-ins the offline plan uses.
 */
function splitConfig(stack: string, overrides: Record<string, unknown>): { plain: Record<string, unknown>; secrets: string[] } {
  const doc = parse(readFileSync(path.join(programDir(), `Pulumi.${stack}.yaml`), "utf8")) as { config?: Record<string, unknown> };
  const plainConfig: Record<string, unknown> = {};
  const secrets: string[] = [];
  for (const [k, v] of Object.entries({ ...(doc.config ?? {}), ...overrides })) {
    if (v === undefined) continue;
    if (v !== null && typeof v === "object" && !Array.isArray(v) && "secure" in v) secrets.push(k);
    else plainConfig[k] = v;
  }
  return { plain: plainConfig, secrets };
}

async function workspaceStack(sb: Sandbox, engineBin: string): Promise<Stack> {
  const p = paths(sb.dir);
  const pulumiCommand = await PulumiCommand.get({ root: path.dirname(engineBin) });
  const program = async () => {
    // The real program, loaded only now: its resources register with this run.
    const main = require(path.join(programDir(), "index.ts")) as () => Promise<Record<string, unknown>>;
    return main();
  };
  return LocalWorkspace.createOrSelectStack(
    { stackName: sb.stack, projectName: PROJECT, program },
    { workDir: p.project, pulumiCommand, envVars: sandboxEnv(sb.dir, sb.dockerHost) },
  );
}

/** Creates (or re-opens) the sandbox's project, backend and stack, with the stack's config and `overrides`. */
export async function openStack(sb: Sandbox, engineBin: string, overrides: Record<string, unknown> = {}): Promise<Stack> {
  const p = paths(sb.dir);
  for (const d of [p.project, p.state, p.home, p.plugins]) mkdirSync(d, { recursive: true });
  const projectDoc = parse(readFileSync(path.join(programDir(), "Pulumi.yaml"), "utf8")) as Record<string, unknown>;
  // The engine loads these plugins from the project's own list (pkg/workspace project plugins).
  projectDoc.plugins = { providers: writePlugins(p.plugins) };
  writeFileSync(path.join(p.project, "Pulumi.yaml"), stringify(projectDoc));

  const stackFile = path.join(p.project, `Pulumi.${sb.stack}.yaml`);
  const fresh = !existsSync(stackFile);
  const stack = await workspaceStack(sb, engineBin);
  // The stack's encryption salt (written at `stack init`) stays; the config is rewritten from the repository's file.
  const salt = (parse(readFileSync(stackFile, "utf8")) as { encryptionsalt?: string } | null)?.encryptionsalt;
  const { plain: plainConfig, secrets } = splitConfig(sb.stack, overrides);
  writeFileSync(stackFile, stringify({ ...(salt ? { encryptionsalt: salt } : {}), config: plainConfig }));
  if (secrets.length > 0) {
    await stack.setAllConfig(Object.fromEntries(secrets.map((k) => [k, { value: securePlaceholder(k.includes(":") ? k : `${PROJECT}:${k}`), secret: true }])));
  }
  void fresh;
  return stack;
}

export function cloudFile(sb: Sandbox): string {
  return paths(sb.dir).cloud;
}

/**
 * command:local:Command run for real, as pulumi/pulumi-command runs it (provider/pkg/provider/local/
 * commandController.go Create/Update/Delete, commandOutputs.go run): `interpreter` (default
 * /bin/sh -c) plus the command, in `dir` (default the provider's working directory), with the
 * provider's environment plus `environment`, the previous stdout/stderr as PULUMI_COMMAND_STDOUT /
 * PULUMI_COMMAND_STDERR unless addPreviousOutputInEnv is false, `stdin` when given; outputs are stdout
 * and stderr with one trailing newline removed; a non-zero exit fails the step with the output.
 * Update runs `update`, or `create` when there is none; delete runs `delete` if given.
 *
 * Real mode only: DOCKER_HOST is the private engine (HM_REAL_DOCKER_HOST), so every docker command
 * of the program talks to it and to nothing else.
 */
import { spawn } from "node:child_process";
import { plain, type Props } from "../values";

/** Inputs this runner honours; anything else set (assetPaths, archivePaths, logging) is refused. */
const KNOWN = new Set(["create", "update", "delete", "interpreter", "dir", "environment", "stdin", "triggers", "addPreviousOutputInEnv", "stdout", "stderr"]);

export interface CommandOutputs {
  stdout: string;
  stderr: string;
}

export function runCommand(dockerHost: string, op: "create" | "update" | "delete", inputs: Props, previous?: CommandOutputs): Promise<CommandOutputs | undefined> {
  const p = plain(inputs) as Props;
  for (const [k, v] of Object.entries(p)) {
    if (!KNOWN.has(k) && !k.startsWith("__") && v !== undefined && v !== null) throw new Error(`command input ${k} is set but the real-mode command provider does not run it: refused`);
  }
  const command = op === "update" ? (p.update ?? p.create) : p[op];
  if (typeof command !== "string") return Promise.resolve(undefined);
  const interpreter = Array.isArray(p.interpreter) && p.interpreter.length > 0 ? p.interpreter.map(String) : ["/bin/sh", "-c"];
  const env: Record<string, string> = { ...(process.env as Record<string, string>) };
  for (const [k, v] of Object.entries((p.environment as Props | undefined) ?? {})) env[k] = String(v);
  if (p.addPreviousOutputInEnv !== false && previous) {
    if (previous.stdout) env.PULUMI_COMMAND_STDOUT = previous.stdout;
    if (previous.stderr) env.PULUMI_COMMAND_STDERR = previous.stderr;
  }
  // The program's commands talk to the private engine, never to a default socket.
  env.DOCKER_HOST = dockerHost;
  return new Promise((resolve, reject) => {
    const child = spawn(interpreter[0]!, [...interpreter.slice(1), command], {
      cwd: typeof p.dir === "string" ? p.dir : process.cwd(),
      env,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let both = "";
    child.stdout.on("data", (d: Buffer) => ((stdout += d), (both += d)));
    child.stderr.on("data", (d: Buffer) => ((stderr += d), (both += d)));
    // Bounded: no command of the program runs for long; a hung one fails the step.
    const timer = setTimeout(() => child.kill("SIGKILL"), 10 * 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`exit status ${code ?? signal}: running ${JSON.stringify(command)}:\n${both}`));
      else resolve({ stdout: stdout.replace(/\n$/, ""), stderr: stderr.replace(/\n$/, "") });
    });
    if (typeof p.stdin === "string" && p.stdin.length > 0) child.stdin.end(p.stdin);
    else child.stdin.end();
  });
}

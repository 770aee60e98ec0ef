import { createHash } from "node:crypto";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";

/** The ssh options of the docker provider and every remote step: a new host key is learnt once, then must not change. */
export const DOCKER_SSH_OPTS = ["-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15", "-o", "BatchMode=yes"];

/** How long a script may run on the node before `timeout` kills it. */
export const REMOTE_SCRIPT_TIMEOUT_SECONDS = 300;

export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

export interface RemoteScriptArgs {
  /** The node's VPN address (the deployer reaches nodes only over the VPN). */
  address: pulumi.Input<string>;
  /** The script, run as root with `sh -s`: it travels on stdin, never in argv or user data. */
  script: pulumi.Input<string>;
  /** Re-run when any of these change (the script's hash is always one). */
  triggers?: pulumi.Input<unknown>[];
}

/**
 * Runs a script on a node over ssh, the script on stdin. Both outputs are secret: its input often
 * holds one (keys), and what a script prints is kept out of plain state. They are not kept out of
 * the log: pulumi-command streams a command's output to the engine while it runs (no `logging`
 * input in @pulumi/command 4.5.0), so no script may print a secret.
 */
export function remoteScript(name: string, args: RemoteScriptArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  return scriptCommand(name, pulumi.interpolate`ssh ${DOCKER_SSH_OPTS.join(" ")} root@${args.address} timeout ${REMOTE_SCRIPT_TIMEOUT_SECONDS} sh -s`, args, opts);
}

function scriptCommand(name: string, create: pulumi.Input<string>, args: RemoteScriptArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  const scriptHash = pulumi.output(args.script).apply(sha256);
  return new command.local.Command(
    name,
    { create, interpreter: ["/bin/sh", "-c"], stdin: args.script, triggers: [scriptHash, ...(args.triggers ?? [])] },
    {
      ...opts,
      additionalSecretOutputs: ["stdout", "stderr"],
      customTimeouts: { create: "10m", update: "10m", delete: "1m" },
    },
  );
}

/** Where a secret is read at run time: a node's VPN address and the command printing only the secret there. */
export interface RemoteSecretSource {
  address: pulumi.Input<string>;
  /** Run there as root over ssh (stdin closed). Only [A-Za-z0-9 ._-] so it is no shell code on either end. */
  command: string;
}

export interface RemoteScriptWithSecretArgs extends RemoteScriptArgs {
  /** The secret's source; fetched by the deployer at run time, never in state, argv or output. */
  secret: RemoteSecretSource;
  /** The script's stdin starts with the line `<variable>=<secret>`, which `sh -s` assigns before the script runs. */
  variable: string;
}

const SAFE_COMMAND = /^[A-Za-z0-9 ._-]+$/;
const SHELL_NAME = /^[a-z_][a-z0-9_]*$/;
const HOST = /^[A-Za-z0-9.:-]+$/;

/**
 * The `create` program of remoteScriptWithSecret, run by /bin/sh on the deployer: reads the secret
 * from the source host into an unexported shell variable (stdin closed, or ssh would swallow the script), refuses
 * an empty value or one with characters that are not plain (it becomes a line of shell), and sends
 * `<variable>=<secret>` then its own stdin (the script) to the node. printf is a shell builtin
 * (dash, bash): the secret is in no deployer process's argv, and nothing prints it.
 */
export function renderSecretFetchCreate(a: { sourceAddress: string; sourceCommand: string; nodeAddress: string; variable: string }): string {
  if (!SAFE_COMMAND.test(a.sourceCommand)) throw new Error(`secret source command "${a.sourceCommand}" must be plain words ([A-Za-z0-9 ._-])`);
  if (!SHELL_NAME.test(a.variable)) throw new Error(`variable "${a.variable}" is not a lower-case shell name`);
  for (const host of [a.sourceAddress, a.nodeAddress]) if (!HOST.test(host)) throw new Error(`address "${host}" is not a plain host address`);
  const ssh = `ssh ${DOCKER_SSH_OPTS.join(" ")}`;
  return [
    "set -eu",
    // Unset first: a variable inherited from the environment stays exported, and ssh would get it.
    "unset hm_secret",
    `hm_secret=$(${ssh} -n root@${a.sourceAddress} ${a.sourceCommand}) || { echo "'${a.sourceCommand}' failed on ${a.sourceAddress}" >&2; exit 1; }`,
    'case $hm_secret in',
    `  '' | *[!A-Za-z0-9._-]*) echo "'${a.sourceCommand}' on ${a.sourceAddress} printed no single plain value" >&2; exit 1 ;;`,
    "esac",
    `{ printf '${a.variable}=%s\\n' "$hm_secret"; cat; } | ${ssh} root@${a.nodeAddress} timeout ${REMOTE_SCRIPT_TIMEOUT_SECONDS} sh -s`,
  ].join("\n");
}

/**
 * remoteScript whose script needs a secret that lives on another node (a swarm join token on the
 * manager): the deployer fetches it when the command runs and sends it ahead of the script, so it is
 * never in state, in the rendered script, in the deployer's argv, or in anything a command prints.
 */
export function remoteScriptWithSecret(name: string, args: RemoteScriptWithSecretArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  const create = pulumi
    .all([args.secret.address, args.address])
    .apply(([sourceAddress, nodeAddress]) => renderSecretFetchCreate({ sourceAddress, sourceCommand: args.secret.command, nodeAddress, variable: args.variable }));
  return scriptCommand(name, create, args, opts);
}

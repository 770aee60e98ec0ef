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
 * Runs a script on a node over ssh, the script on stdin. Both outputs are secret: a script may
 * print a secret (join tokens), and its input often holds one (keys, tokens).
 */
export function remoteScript(name: string, args: RemoteScriptArgs, opts: pulumi.CustomResourceOptions): command.local.Command {
  const scriptHash = pulumi.output(args.script).apply(sha256);
  return new command.local.Command(
    name,
    {
      create: pulumi.interpolate`ssh ${DOCKER_SSH_OPTS.join(" ")} root@${args.address} timeout ${REMOTE_SCRIPT_TIMEOUT_SECONDS} sh -s`,
      interpreter: ["/bin/sh", "-c"],
      stdin: args.script,
      triggers: [scriptHash, ...(args.triggers ?? [])],
    },
    {
      ...opts,
      additionalSecretOutputs: ["stdout", "stderr"],
      customTimeouts: { create: "10m", update: "10m", delete: "1m" },
    },
  );
}

import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { NODE_ROLES } from "./settings";

export interface LocalSwarmArgs {
  /** Overlay address pool, used only if this engine is not a swarm yet. */
  addressPool: pulumi.Input<string>;
}

export const ROLE_LABEL_PREFIX = "hardened-matrix.role.";

/** Placement constraint for services that must run on the node carrying `role`. */
export function roleConstraint(role: string): string {
  return `node.labels.${ROLE_LABEL_PREFIX}${role}==true`;
}

/**
 * Idempotent: joins nothing, leaves nothing. If the engine is not a swarm manager yet it becomes a
 * single-node swarm listening on loopback only; an existing swarm is used as it is.
 */
export function localSwarmScript(addressPool: string): string {
  const labels = NODE_ROLES.map((r) => `--label-add ${ROLE_LABEL_PREFIX}${r}=true`).join(" ");
  return [
    "set -eu",
    "state=$(docker info --format '{{.Swarm.LocalNodeState}}')",
    'if [ "$state" = "inactive" ]; then',
    `  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 --default-addr-pool ${addressPool}`,
    'elif [ "$state" != "active" ]; then',
    '  echo "the local Docker engine is in swarm state \\"$state\\"; resolve it first (docker info)" >&2; exit 1',
    "fi",
    "if [ \"$(docker info --format '{{.Swarm.ControlAvailable}}')\" != \"true\" ]; then",
    '  echo "the local Docker engine is a swarm worker; run this on a manager" >&2; exit 1',
    "fi",
    `docker node update ${labels} "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null`,
    "",
  ].join("\n");
}

/** The local Docker engine as a single-node swarm, and the docker provider for it. */
export class LocalSwarm extends pulumi.ComponentResource {
  readonly provider: docker.Provider;

  constructor(name: string, args: LocalSwarmArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:LocalSwarm", name, {}, opts);
    const init = new command.local.Command(
      `${name}-init`,
      {
        create: pulumi.output(args.addressPool).apply(localSwarmScript),
        // Never leave the swarm on destroy: it may hold more than this stack.
        delete: "true",
        interpreter: ["/bin/sh", "-c"],
      },
      { parent: this },
    );
    this.provider = new docker.Provider(`${name}-docker`, { host: "unix:///var/run/docker.sock" }, { parent: this, dependsOn: [init] });
    this.registerOutputs({});
  }
}

import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { parsePrinted, renderSwarmInitScript, renderSwarmJoinScript, renderSwarmLabelScript, TOKEN_VARIABLE } from "../render/swarm";
import { NODE_ROLES, type NodeRole } from "../settings";
import { ROLE_LABEL_PREFIX } from "./platform";
import { DOCKER_SSH_OPTS, remoteScript, remoteScriptWithSecret } from "./remote";

export interface SwarmNode {
  /** Also the node's hostname, which is how the swarm names it. */
  name: string;
  roles: NodeRole[];
  meshAddress: string;
  adminAddress: pulumi.Input<string>;
  /** Changes when the machine is replaced: the new one must join. */
  machineId: pulumi.Input<string | number>;
  /** The node's wg0 is up (its swarm traffic has a path). */
  meshReady: pulumi.Resource;
}

export interface SwarmClusterArgs {
  nodes: SwarmNode[];
  addressPool: string;
  /** Earlier names of the provider: a renamed provider would replace every resource it manages. */
  providerAliases?: pulumi.Input<pulumi.Alias>[];
}

/**
 * The swarm over the mesh: init on the first manager, the other managers join one at a time
 * (each join changes the Raft membership), then the workers, then every node is labelled by role
 * and replaced nodes' dead predecessors are removed. Gives the docker provider every service
 * uses, which waits for the labelled cluster. A one-node stack goes through the same steps.
 */
export class SwarmCluster extends pulumi.ComponentResource {
  readonly provider: docker.Provider;
  readonly managerNodeId: pulumi.Output<string>;

  constructor(name: string, args: SwarmClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:SwarmCluster", name, {}, opts);
    const child = { parent: this };
    const first = args.nodes.find((n) => n.roles.includes("manager"));
    if (!first) throw new Error("a swarm needs a manager");

    const init = remoteScript(
      `${name}-${first.name}-init`,
      { address: first.adminAddress, script: renderSwarmInitScript({
          meshAddress: first.meshAddress,
          addressPool: args.addressPool,
          otherManagers: args.nodes.filter((n) => n !== first && n.roles.includes("manager")).map((n) => n.meshAddress),
        }), triggers: [first.machineId] },
      { ...child, dependsOn: [first.meshReady] },
    );
    this.managerNodeId = pulumi.unsecret(pulumi.secret(init.stdout).apply((out) => parsePrinted(out, ["node-id"], `swarm init on ${first.name}`)["node-id"]!));

    const joins: command.local.Command[] = [];
    const joinedIds: pulumi.Output<string>[] = [];
    let previousManager: pulumi.Resource = init;
    const others = args.nodes.filter((n) => n !== first);
    // Managers first, one after the other; workers after the last manager, in parallel.
    for (const node of [...others.filter((n) => n.roles.includes("manager")), ...others.filter((n) => !n.roles.includes("manager"))]) {
      const manager = node.roles.includes("manager");
      const join = remoteScriptWithSecret(
        `${name}-${node.name}-join`,
        {
          address: node.adminAddress,
          script: renderSwarmJoinScript({ meshAddress: node.meshAddress, managerAddress: first.meshAddress }),
          // The token is fetched from the first manager as the join runs and sent ahead of the script:
          // a command's output may reach deploy logs, so no command prints it (docker/cli join_token.go: -q prints only the token).
          secret: { address: first.adminAddress, command: `docker swarm join-token -q ${manager ? "manager" : "worker"}` },
          variable: TOKEN_VARIABLE,
          // A new machine, or a new swarm (the manager's node id), re-runs the join, which leaves a joined node alone.
          triggers: [node.machineId, this.managerNodeId],
        },
        { ...child, dependsOn: [node.meshReady, previousManager] },
      );
      if (manager) previousManager = join;
      joins.push(join);
      joinedIds.push(pulumi.unsecret(pulumi.secret(join.stdout).apply((out) => parsePrinted(out, ["node-id"], `swarm join on ${node.name}`)["node-id"]!)));
    }

    const owned = NODE_ROLES.map((r) => `${ROLE_LABEL_PREFIX}${r}`);
    const labelScript = renderSwarmLabelScript({
      nodes: args.nodes.map((n) => ({ hostname: n.name, labels: n.roles.map((r) => `${ROLE_LABEL_PREFIX}${r}`) })),
      ownedLabels: owned,
    });
    const labels = remoteScript(
      `${name}-labels`,
      // Re-run whenever a node (re)joins: it may have left a dead predecessor behind.
      { address: first.adminAddress, script: labelScript, triggers: [this.managerNodeId, ...joinedIds] },
      { ...child, dependsOn: [init, ...joins] },
    );

    // The deployer is on the tailnet; the Docker API is reached over SSH to the first manager, never published.
    this.provider = new docker.Provider(
      `${name}-docker`,
      { host: pulumi.interpolate`ssh://root@${first.adminAddress}`, sshOpts: DOCKER_SSH_OPTS },
      { ...child, dependsOn: [labels], aliases: args.providerAliases },
    );
    this.registerOutputs({ managerNodeId: this.managerNodeId });
  }
}

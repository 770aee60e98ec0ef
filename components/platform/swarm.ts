import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { parsePrinted, renderNodeTeardownProgram, renderSwarmInitScript, renderSwarmJoinScript, renderSwarmLabelScript, TOKEN_VARIABLE } from "../render/swarm";
import { NODE_ROLES, type NodeRole } from "../settings";
import { ROLE_LABEL_PREFIX } from "./platform";
import { DOCKER_SSH_OPTS, REMOTE_SCRIPT_TIMEOUT_SECONDS, remoteScript, remoteScriptWithSecret } from "./remote";

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
  /** What ties the droplet to cloud state (volume attachments, reserved IP): deleted only after the node's teardown. */
  holds?: pulumi.Resource[];
  /** Where its volumes are mounted (unmounted by the teardown). */
  mountPoints?: string[];
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
    const joinOf = new Map<string, command.local.Command>();
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
      joinOf.set(node.name, join);
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

    // One teardown per node: created (a no-op) once the node has joined, deleted before its
    // droplet whenever the droplet goes (replaced, or the node left `nodes`). Its `delete` drains,
    // demotes, leaves, stops the engine, unmounts the volumes, stops wg0 and removes the node
    // (renderNodeTeardownProgram). Replaced with the droplet: `triggers` holds the droplet id, and
    // the engine deletes a delete-before-replace resource's dependents whose provider Diff, given
    // the droplet's outputs as unknown, is a replace (pulumi/pulumi
    // pkg/resource/deploy/step_generator.go calculateDependentReplacements); `triggers` is
    // replaceOnChanges in pulumi/pulumi-command provider/pkg/provider/common/inputs.go, and a
    // wholly unknown value is a change (pulumi/pulumi-go-provider infer/resource.go diff). Other
    // nodes' addresses sit in `delete` only, an update: another node's replacement never
    // deletes (runs) this one. It depends on the node's attachments, so it is deleted before them
    // (deletes run in reverse dependency order), and on the previous node's teardown, so that
    // several nodes leave one after another, never two managers at once.
    const managers = args.nodes.filter((n) => n.roles.includes("manager"));
    let previousTeardown: pulumi.Resource | undefined;
    for (const node of args.nodes) {
      const joined = node === first ? init : joinOf.get(node.name)!;
      const otherManagers = managers.filter((m) => m !== node).map((m) => m.adminAddress);
      const teardown = new command.local.Command(
        `${name}-${node.name}-teardown`,
        {
          create: `echo "teardown of ${node.name} armed"`,
          delete: pulumi.all([node.adminAddress, pulumi.all(otherManagers)]).apply(([nodeAddress, managerAddresses]) =>
            renderNodeTeardownProgram({
              hostname: node.name,
              nodeAddress,
              managerAddresses,
              mountPoints: node.mountPoints ?? [],
              ssh: ["ssh", ...DOCKER_SSH_OPTS].join(" "),
              timeoutSeconds: REMOTE_SCRIPT_TIMEOUT_SECONDS,
            }),
          ),
          interpreter: ["/bin/sh", "-c"],
          triggers: [node.machineId],
        },
        {
          ...child,
          dependsOn: [joined, ...(node.holds ?? []), ...(previousTeardown ? [previousTeardown] : [])],
          // Three remote scripts of at most REMOTE_SCRIPT_TIMEOUT_SECONDS each, plus ssh.
          customTimeouts: { create: "1m", update: "1m", delete: "20m" },
        },
      );
      previousTeardown = teardown;
    }

    // The deployer is on the tailnet; the Docker API is reached over SSH to the first manager, never published.
    this.provider = new docker.Provider(
      `${name}-docker`,
      { host: pulumi.interpolate`ssh://root@${first.adminAddress}`, sshOpts: DOCKER_SSH_OPTS },
      { ...child, dependsOn: [labels], aliases: args.providerAliases },
    );
    this.registerOutputs({ managerNodeId: this.managerNodeId });
  }
}

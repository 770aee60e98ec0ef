import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { ROLE_LABEL_PREFIX, type Platform, type StoragePurpose } from "./platform";
import { NODE_ROLES, type NodeRole } from "../settings";

export interface LocalSwarmArgs {
  /** Overlay address pool, used only if this engine is not a swarm yet. */
  addressPool: pulumi.Input<string>;
  /** Machine memory, for sizing services. */
  memoryMb: number;
  /** Address TURN advertises to clients on this machine. */
  turnExternalIp: string;
  /** A pinned image of the stack that has chown (Alpine), to hand a new volume to its service's user. */
  toolImage: string;
}

/**
 * The names this program gives Swarm objects, fixed and not per stack (components/services/*:
 * serviceName, networkName; this file's volumes; the backup spool). Renaming them per stack would
 * replace every service of existing deployments. test/localSwarm.test.ts checks this list against
 * the names the program plans.
 */
export const FIXED_SWARM_NAMES = {
  service: ["traefik", "socket-proxy", "dendrite", "postgres", "coturn", "federation-gate", "backup", "backup-dump", "funnel"],
  network: ["edge", "docker-api", "db", "federation-gate", "backup", "funnel"],
  volume: ["hardened-matrix-postgres", "hardened-matrix-dendrite", "hardened-matrix-acme", "hardened-matrix-funnel", "hardened-matrix-backup-spool"],
} as const;

/** The swarm node label naming the stack whose objects these are. */
export const STACK_LABEL = "hardened-matrix.stack";

/**
 * Idempotent: joins nothing, leaves nothing. If the engine is not a swarm manager yet it becomes a
 * single-node swarm listening on loopback only; an existing swarm is used as it is.
 * One hardened-matrix stack per swarm: the manager carries the label `hardened-matrix.stack=<stack>`.
 * A swarm labelled for another stack is refused. `fresh` (this stack's first deploy): a swarm with
 * no label that already holds a service, network or volume of one of our names is refused too
 * (Swarm would refuse the service and network later, after other resources were made; a volume
 * would silently be taken over). Otherwise (this stack already deployed, so objects of our names
 * are its own) the label is set.
 */
export function localSwarmScript(addressPool: string, stack: string, fresh: boolean): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(stack)) throw new Error(`stack name "${stack}" cannot be a swarm label value`);
  const labels = NODE_ROLES.map((r) => `--label-add ${ROLE_LABEL_PREFIX}${r}=true`).join(" ");
  const ours = Object.entries(FIXED_SWARM_NAMES).flatMap(([kind, names]) => names.map((n) => `'${kind} ${n}'`));
  return [
    "set -eu",
    `stack=${stack}`,
    "state=$(docker info --format '{{.Swarm.LocalNodeState}}')",
    'if [ "$state" = "inactive" ]; then',
    `  docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 --default-addr-pool ${addressPool}`,
    'elif [ "$state" != "active" ]; then',
    '  echo "the local Docker engine is in swarm state \\"$state\\"; resolve it first (docker info)" >&2; exit 1',
    "fi",
    "if [ \"$(docker info --format '{{.Swarm.ControlAvailable}}')\" != \"true\" ]; then",
    '  echo "the local Docker engine is a swarm worker; run this on a manager" >&2; exit 1',
    "fi",
    "node=$(docker info --format '{{.Swarm.NodeID}}')",
    `owner=$(docker node inspect --format '{{ index .Spec.Labels "${STACK_LABEL}" }}' "$node")`,
    'if [ -n "$owner" ] && [ "$owner" != "$stack" ]; then',
    `  echo "this swarm already carries hardened-matrix stack \\"$owner\\" (node label ${STACK_LABEL}); its services, networks and volumes have the names stack \\"$stack\\" would use. Deploy one of them to another engine, or destroy \\"$owner\\" and remove the label" >&2; exit 1`,
    "fi",
    ...(fresh
      ? [
          'if [ -z "$owner" ]; then',
          "  have=$(docker service ls --format 'service {{.Name}}'; docker network ls --format 'network {{.Name}}'; docker volume ls --format 'volume {{.Name}}')",
          '  taken=""',
          `  for want in ${ours.join(" ")}; do`,
          `    if printf '%s\\n' "$have" | grep -Fxq "$want"; then taken="$taken, $want"; fi`,
          "  done",
          '  if [ -n "$taken" ]; then',
          `    echo "this engine already has \${taken#, }, not made by stack \\"$stack\\" (no ${STACK_LABEL} label): hardened-matrix's names are fixed, so this deploy would collide with them or take them over. Remove them or deploy to another engine; if they are this stack's own, from before this check, claim them: docker node update --label-add ${STACK_LABEL}=$stack $node" >&2`,
          "    exit 1",
          "  fi",
          "fi",
        ]
      : []),
    `docker node update --label-add ${STACK_LABEL}=$stack ${labels} "$node" >/dev/null`,
    "",
  ].join("\n");
}

/** Hands a fresh volume to a non-root user: the one root step, with no network and only CHOWN/FOWNER. */
export function volumeOwnerScript(volume: string, owner: string, image: string): string {
  return `docker run --rm --network none --cap-drop ALL --cap-add CHOWN --cap-add FOWNER --user 0:0 --entrypoint chown -v ${volume}:/data ${image} ${owner} /data\n`;
}

/** The local Docker engine as a single-node swarm, the docker provider for it, and protected volumes. */
export class LocalSwarm extends pulumi.ComponentResource implements Platform {
  readonly provider: docker.Provider;
  readonly turnExternalIp: string;
  readonly privateRanges: string[];
  readonly outputs: Record<string, pulumi.Input<unknown>> = {};
  private readonly name: string;
  private readonly args: LocalSwarmArgs;

  constructor(name: string, args: LocalSwarmArgs, opts?: pulumi.ComponentResourceOptions) {
    super("hardened-matrix:platform:LocalSwarm", name, {}, opts);
    this.name = name;
    this.args = args;
    this.turnExternalIp = args.turnExternalIp;
    // The overlay pool is this deployment's private space; the rest of 10/8 and 172.16/12 is denied to TURN anyway.
    this.privateRanges = [];
    const init = new command.local.Command(
      `${name}-init`,
      {
        // create: this stack's first deploy; update: it has deployed before (pulumi-command runs
        // `update` on any change but `triggers`: provider/pkg/provider/common/inputs.go, local/commandController.go).
        create: pulumi.output(args.addressPool).apply((pool) => localSwarmScript(pool, pulumi.getStack(), true)),
        update: pulumi.output(args.addressPool).apply((pool) => localSwarmScript(pool, pulumi.getStack(), false)),
        // Never leave the swarm on destroy: it may hold more than this stack.
        delete: "true",
        interpreter: ["/bin/sh", "-c"],
      },
      { parent: this },
    );
    this.provider = new docker.Provider(`${name}-docker`, { host: "unix:///var/run/docker.sock" }, { parent: this, dependsOn: [init] });
    this.registerOutputs({});
  }

  nodeMemoryMb(_role: NodeRole): number {
    return this.args.memoryMb;
  }

  storage(purpose: StoragePurpose, _role: NodeRole, owner: string) {
    const volumeName = `hardened-matrix-${purpose}`;
    // Data outlives the stack: protected against deletion, and kept if the resource is dropped.
    const volume = new docker.Volume(
      `${this.name}-${purpose}-volume`,
      { name: volumeName, driver: "local", labels: [{ label: "hardened-matrix.purpose", value: purpose }] },
      { parent: this, provider: this.provider, protect: true, retainOnDelete: true },
    );
    const handOver = new command.local.Command(
      `${this.name}-${purpose}-owner`,
      { create: volume.name.apply((v) => volumeOwnerScript(v, owner, this.args.toolImage)), interpreter: ["/bin/sh", "-c"], triggers: [owner] },
      { parent: this, dependsOn: [volume] },
    );
    // The mount's source carries the hand-over as a dependency: a service using this storage is
    // created only after its volume belongs to its user, never on a root-owned volume.
    // The urn is known in a preview too, so the source stays known there.
    const source = pulumi.all([volume.name, handOver.urn]).apply(([v]) => v);
    return { type: "volume", source, readOnly: false };
  }
}

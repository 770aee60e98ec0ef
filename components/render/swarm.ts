/**
 * Swarm formation as plain POSIX shell scripts, run on a node as root with `sh -s` (the script on
 * stdin) and the `docker` CLI against the local engine, so a test can run the very same text with
 * DOCKER_HOST pointing at a test engine. Every script is idempotent and prints `key=value` lines;
 * a `# hm-prints:` line names them. Knows nothing of Pulumi.
 *
 * Docker CLI facts (docker/cli cli/command/swarm/init.go, join.go, join_token.go; cli/command/node/update.go):
 * `swarm init|join` take --advertise-addr, --listen-addr, --data-path-addr (--default-addr-pool:
 * init only); `swarm join-token -q worker|manager` prints only the token; `node update
 * --label-add k=v --label-rm k`; `docker info --format '{{.Swarm.LocalNodeState}}'` is one of
 * inactive, pending, active, error, locked (moby api/types/swarm LocalNodeState).
 */

/** Docker's swarm control port (2377/tcp); gossip 7946 and VXLAN 4789 follow the data-path address. */
export const SWARM_PORT = 2377;
/**
 * The join script's first line of stdin assigns this variable (`token=<value>`): the deployer
 * fetches the token from a manager at run time and sends it ahead of the script, so no rendered
 * text, argv or printed output on the deployer holds it.
 */
export const TOKEN_VARIABLE = "token";

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const CIDR4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(\d|[12]\d|3[0-2])$/;
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL = /^[A-Za-z0-9._-]+$/;

function check(problems: string[]): void {
  if (problems.length > 0) throw new Error(`invalid swarm script input:\n  - ${problems.join("\n  - ")}`);
}

/** Fails unless the engine's swarm state is one of the expected ones; prints nothing. */
const STATE = `state=$(docker info --format '{{.Swarm.LocalNodeState}}')`;

export interface SwarmInitInput {
  /** The node's mesh (wg0) address: the only address swarm control and data traffic use. */
  meshAddress: string;
  /** Overlay subnets come from here; settable only at init. */
  addressPool: string;
  /** The other managers' mesh addresses: if one already runs a swarm, this node must join it, not start another. */
  otherManagers: string[];
}

/**
 * Forms the swarm on the first manager (only if the engine is in none, and no other manager
 * already answers on the swarm port: a replaced first manager must never start a second
 * cluster), and prints its node id: `node-id=`. It never prints a join token: a command's
 * output may reach deploy logs (pulumi-command streams it to the engine while it runs).
 */
export function renderSwarmInitScript(i: SwarmInitInput): string {
  const problems: string[] = [];
  if (!IPV4.test(i.meshAddress)) problems.push(`meshAddress "${i.meshAddress}" is not IPv4`);
  if (!CIDR4.test(i.addressPool)) problems.push(`addressPool "${i.addressPool}" is not an IPv4 CIDR`);
  for (const m of i.otherManagers) if (!IPV4.test(m) || m === i.meshAddress) problems.push(`other manager "${m}" is not another IPv4 address`);
  check(problems);
  const a = i.meshAddress;
  // python3 rather than nc: cloud-init needs it, so every droplet image has it.
  const probe = i.otherManagers.length
    ? `
    for peer in ${i.otherManagers.join(" ")}; do
      if python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], ${SWARM_PORT}), 3).close()' "$peer" 2>/dev/null; then
        echo "a swarm already answers on $peer:${SWARM_PORT}: this node must join it, not start a second one (list a running manager first in nodes)" >&2
        exit 1
      fi
    done`
    : "";
  return `#!/bin/sh
# Forms the swarm on this node, once, on its mesh address only (hardened-matrix SwarmCluster).
# hm-prints: node-id
set -eu
${STATE}
case $state in
  inactive)${probe}
    docker swarm init --advertise-addr ${a} --listen-addr ${a}:${SWARM_PORT} --data-path-addr ${a} --default-addr-pool ${i.addressPool} >/dev/null
    ;;
  active) ;;
  *)
    echo "swarm state is '$state'; expected inactive or active" >&2
    exit 1
    ;;
esac
if [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]; then
  echo "this node is in a swarm but is not a manager" >&2
  exit 1
fi
${meshAddressCheckAndId(a, ": leave it (docker swarm leave --force) and re-run")}`;
}

/** The tail of init and join: the node's swarm must advertise its mesh address; then its node id is printed. */
function meshAddressCheckAndId(meshAddress: string, hint: string): string {
  return `addr=$(docker info --format '{{.Swarm.NodeAddr}}')
if [ "$addr" != ${meshAddress} ]; then
  echo "this node's swarm advertises $addr, not the mesh address ${meshAddress}${hint}" >&2
  exit 1
fi
echo "node-id=$(docker info --format '{{.Swarm.NodeID}}')"
`;
}

export interface SwarmJoinInput {
  meshAddress: string;
  /** The first manager's mesh address. */
  managerAddress: string;
}

/**
 * Joins this node to the swarm over the mesh, unless it is already in one (a joined node is not
 * re-joined). Prints `node-id=`. The script holds no token: it runs as `sh -s` with stdin =
 * one line `token=<value>` (assigned by sh before the script starts) + the script, and refuses
 * a missing or malformed token. On the node the token is an argument of `docker swarm join` for
 * the moment the join takes, the only way the CLI takes it (docker/cli cli/command/swarm/join.go: flag --token).
 */
export function renderSwarmJoinScript(j: SwarmJoinInput): string {
  const problems: string[] = [];
  if (!IPV4.test(j.meshAddress)) problems.push(`meshAddress "${j.meshAddress}" is not IPv4`);
  if (!IPV4.test(j.managerAddress)) problems.push(`managerAddress "${j.managerAddress}" is not IPv4`);
  if (j.meshAddress === j.managerAddress) problems.push("a node cannot join itself");
  check(problems);
  const a = j.meshAddress;
  return `#!/bin/sh
# Joins this node to the swarm over the mesh, once (hardened-matrix SwarmCluster).
# Run with stdin = a line ${TOKEN_VARIABLE}=<join token>, then this script.
# hm-prints: node-id
set -eu
# Token shapes: moby/swarmkit ca/config.go GenerateJoinToken (v1 SWMTKN-1-<digest>-<secret>, v2 SWMTKN-2-<fips>-<digest>-<secret>, base 36).
case \${${TOKEN_VARIABLE}:-} in
  SWMTKN-1-*-* | SWMTKN-2-*-*-*) ;;
  '') echo "no join token: send a line ${TOKEN_VARIABLE}=<join token> before this script" >&2; exit 1 ;;
  *) echo "the join token is not shaped SWMTKN-1-<digest>-<secret>" >&2; exit 1 ;;
esac
case \$${TOKEN_VARIABLE} in
  *[!A-Za-z0-9-]*) echo "the join token has characters other than [A-Za-z0-9-]" >&2; exit 1 ;;
esac
${STATE}
case $state in
  inactive)
    docker swarm join --advertise-addr ${a} --listen-addr ${a}:${SWARM_PORT} --data-path-addr ${a} --token "$${TOKEN_VARIABLE}" ${j.managerAddress}:${SWARM_PORT} >/dev/null
    ;;
  active) ;;
  *)
    echo "swarm state is '$state'; expected inactive or active" >&2
    exit 1
    ;;
esac
${meshAddressCheckAndId(a, "")}`;
}

export interface SwarmLabelInput {
  /** Every node of the cluster by hostname, with the labels it must carry. */
  nodes: Array<{ hostname: string; labels: string[] }>;
  /** Label keys this program owns: any of them a node should not carry is removed. */
  ownedLabels: string[];
}

/**
 * Run on a manager after every node has joined. For each hostname: there must be exactly one
 * Ready node of that name; any other node of that name (status Down, Disconnected or Unknown: a
 * replaced droplet's predecessor) is demoted if it was a manager and removed (`docker node rm`
 * refuses a Ready node without --force, which is never used). Then the Ready node gets exactly
 * its owned labels (`key=true`), addressed by node id. `docker node ls` prints the status
 * capitalised (docker/cli cli/command/formatter/node.go Status: PrettyPrint of the state). Changes nothing on a cluster already in that state. Prints `labelled=` and `removed=`
 * (counts).
 */
export function renderSwarmLabelScript(l: SwarmLabelInput): string {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const n of l.nodes) {
    if (!HOSTNAME.test(n.hostname)) problems.push(`hostname "${n.hostname}" is not a DNS label`);
    if (seen.has(n.hostname)) problems.push(`hostname "${n.hostname}" is listed twice`);
    seen.add(n.hostname);
    for (const label of n.labels) if (!l.ownedLabels.includes(label)) problems.push(`label "${label}" of ${n.hostname} is not an owned label`);
  }
  for (const label of l.ownedLabels) if (!LABEL.test(label)) problems.push(`label "${label}" has characters other than [A-Za-z0-9._-]`);
  if (l.nodes.length === 0) problems.push("no nodes to label");
  check(problems);
  const calls = l.nodes.map((n) => `reconcile ${n.hostname} '${n.labels.join(" ")}'`).join("\n");
  return `#!/bin/sh
# Labels every node by role and removes replaced nodes' dead predecessors (hardened-matrix SwarmCluster).
# hm-prints: labelled removed
set -eu
owned='${l.ownedLabels.join(" ")}'
labelled=0
removed=0
reconcile() {
  host=$1
  want=$2
  list=$(docker node ls --format '{{.ID}} {{.Hostname}} {{.Status}}')
  ids=$(echo "$list" | awk -v h="$host" '$2 == h && $3 == "Ready" { print $1 }')
  case $(echo "$ids" | grep -c .) in
    1) ;;
    0) echo "no Ready swarm node is called $host" >&2; return 1 ;;
    *) echo "several Ready swarm nodes are called $host: $(echo "$ids" | tr '\\n' ' ')" >&2; return 1 ;;
  esac
  # With its replacement Ready, any other node of that name (Down, Disconnected, Unknown) is dead.
  for dead in $(echo "$list" | awk -v h="$host" '$2 == h && $3 != "Ready" { print $1 }'); do
    if [ "$(docker node inspect --format '{{.Spec.Role}}' "$dead")" = manager ]; then
      docker node demote "$dead" >/dev/null
    fi
    docker node rm "$dead" >/dev/null
    removed=$((removed + 1))
  done
  set --
  for label in $owned; do
    have=$(docker node inspect --format "{{ index .Spec.Labels \\"$label\\" }}" "$ids")
    case " $want " in
      *" $label "*) [ "$have" = true ] || set -- "$@" --label-add "$label=true" ;;
      *) [ -z "$have" ] || [ "$have" = "<no value>" ] || set -- "$@" --label-rm "$label" ;;
    esac
  done
  if [ "$#" -gt 0 ]; then
    docker node update "$@" "$ids" >/dev/null
    labelled=$((labelled + 1))
  fi
}
${calls}
echo "labelled=$labelled"
echo "removed=$removed"
`;
}

/** Parses the `key=value` lines a script printed; throws naming the missing keys. */
export function parsePrinted(stdout: string, keys: string[], what: string): Record<string, string> {
  const found: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const m = /^([a-z-]+)=(.*)$/.exec(line.trim());
    if (m) found[m[1]!] = m[2]!;
  }
  const missing = keys.filter((k) => !found[k]);
  if (missing.length > 0) throw new Error(`${what} printed no ${missing.join(", ")}`);
  return found;
}

// ---- teardown: a node leaves the swarm before its droplet is deleted ---------------------------

/** Bounds of the teardown's waits, in seconds (each loop polls every 2 s). */
export const TEARDOWN_WAITS = { tasksGone: 180, demoted: 60, down: 120 };

function checkHost(hostname: string): void {
  if (!HOSTNAME.test(hostname)) throw new Error(`invalid swarm script input: hostname "${hostname}" is not a DNS label`);
}

/**
 * Run on a manager that stays: drains every swarm node called `hostname` (the one leaving; its
 * replacement does not exist yet: droplets are delete-before-replace), waits until the
 * orchestrator wants none of its tasks running, then demotes it if it is a manager, so Raft
 * loses the member before the node goes (docker/cli cli/command/node/demote.go; a manager
 * that just left or died would stay a Raft member, unreachable). Prints `drained=` (count).
 */
export function renderSwarmDrainScript(hostname: string): string {
  checkHost(hostname);
  return `#!/bin/sh
# Drains and demotes ${hostname} before it leaves (hardened-matrix SwarmCluster teardown).
# hm-prints: drained
set -eu
ids=$(docker node ls --format '{{.ID}} {{.Hostname}}' | awk -v h=${hostname} '$2 == h { print $1 }')
if [ -z "$ids" ]; then
  echo "drained=0"
  exit 0
fi
for id in $ids; do
  docker node update --availability drain "$id" >/dev/null
done
i=0
while [ -n "$(docker node ps --filter desired-state=running -q $ids)" ]; do
  i=$((i + 1))
  if [ "$i" -gt ${TEARDOWN_WAITS.tasksGone / 2} ]; then
    echo "tasks of ${hostname} are still meant to run ${TEARDOWN_WAITS.tasksGone} s after the drain" >&2
    exit 1
  fi
  sleep 2
done
for id in $ids; do
  if [ "$(docker node inspect --format '{{.Spec.Role}}' "$id")" = manager ]; then
    docker node demote "$id" >/dev/null
  fi
done
echo "drained=$(echo "$ids" | grep -c .)"
`;
}

export interface NodeLeaveInput {
  /** Where the node's volumes are mounted: unmounted once nothing can write to them. */
  mountPoints: string[];
  /** No other manager exists (a one-manager swarm ends with this node): leave with --force, nothing drained it. */
  lastManager: boolean;
  /** The mesh interface (another name only in tests). */
  iface?: string;
}

/**
 * Run on the node that goes: waits until no swarm task container runs on it (the drain stops
 * them), waits until it is no longer a manager (demoted), leaves the swarm, stops the engine
 * (nothing writes to a volume after that), unmounts its volumes, and stops its mesh interface,
 * so its replacement can take the volumes, the WireGuard identity and the mesh address.
 * Refuses (exit 1, nothing unmounted) if tasks still run or it is still a manager when its wait
 * ends. Prints `left=1`.
 */
export function renderNodeLeaveScript(l: NodeLeaveInput): string {
  const iface = l.iface ?? "wg0";
  const problems: string[] = [];
  for (const m of l.mountPoints) if (!/^\/mnt\/[A-Za-z0-9._-]+$/.test(m)) problems.push(`mount point "${m}" is not /mnt/<name>`);
  if (!/^[a-z][a-z0-9]{0,14}$/.test(iface)) problems.push(`interface "${iface}" is not a plain name`);
  check(problems);
  const swarm = l.lastManager
    ? `# The only manager: the swarm ends with this node.
if [ "$state" != inactive ]; then docker swarm leave --force >/dev/null; fi`
    : `i=0
while [ -n "$(docker ps -q --filter label=com.docker.swarm.task.id)" ]; do
  i=$((i + 1))
  if [ "$i" -gt ${TEARDOWN_WAITS.tasksGone / 2} ]; then
    echo "swarm tasks still run here ${TEARDOWN_WAITS.tasksGone} s after the drain; nothing unmounted:" >&2
    docker ps --filter label=com.docker.swarm.task.id --format '{{.Names}}' >&2
    exit 1
  fi
  sleep 2
done
case $state in
  inactive) ;;
  active)
    i=0
    while [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ]; do
      i=$((i + 1))
      if [ "$i" -gt ${TEARDOWN_WAITS.demoted / 2} ]; then
        echo "still a manager ${TEARDOWN_WAITS.demoted} s after the demotion: not leaving (a manager that leaves stays in Raft)" >&2
        exit 1
      fi
      sleep 2
    done
    docker swarm leave >/dev/null
    ;;
  *)
    # pending (a join that never completed), error: not a member of any swarm's Raft.
    docker swarm leave --force >/dev/null 2>&1 || true
    ;;
esac`;
  const mounts = l.mountPoints.length
    ? `for m in ${l.mountPoints.join(" ")}; do
  if mountpoint -q "$m"; then umount "$m"; fi
done`
    : "# No volume on this node.";
  return `#!/bin/sh
# Takes this node out of the swarm and releases its volumes and mesh identity (hardened-matrix SwarmCluster teardown).
# hm-prints: left
set -eu
# An engine that does not answer (stopped by an earlier, interrupted teardown, or dead) runs no
# task: its node is left to the manager, which removes it once it shows down.
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null) || state=stopped
if [ "$state" = stopped ]; then
  echo "the engine does not answer: not leaving from here (a manager removes the node)" >&2
else
${swarm}
fi
# The socket too: with socket activation a stopped engine would start again on the next call.
systemctl stop docker.socket
systemctl stop docker.service
${mounts}
systemctl disable wg-quick@${iface}.service >/dev/null 2>&1 || true
systemctl stop wg-quick@${iface}.service
echo "left=1"
`;
}

/**
 * Run on a manager that stays, after the node left (or if it is dead): waits until every swarm
 * node called `hostname` is down, demotes one that is still a manager (a dead one was never
 * demoted by its own leave), and removes it. Prints `removed=` (count).
 */
export function renderSwarmRemoveScript(hostname: string): string {
  checkHost(hostname);
  return `#!/bin/sh
# Removes ${hostname} from the swarm once it is down (hardened-matrix SwarmCluster teardown).
# hm-prints: removed
set -eu
ids=$(docker node ls --format '{{.ID}} {{.Hostname}}' | awk -v h=${hostname} '$2 == h { print $1 }')
removed=0
for id in $ids; do
  i=0
  while [ "$(docker node inspect --format '{{.Status.State}}' "$id")" != down ]; do
    i=$((i + 1))
    if [ "$i" -gt ${TEARDOWN_WAITS.down / 2} ]; then
      echo "${hostname} ($id) is not down ${TEARDOWN_WAITS.down} s after leaving" >&2
      exit 1
    fi
    sleep 2
  done
  if [ "$(docker node inspect --format '{{.Spec.Role}}' "$id")" = manager ]; then
    docker node demote "$id" >/dev/null
  fi
  docker node rm "$id" >/dev/null
  removed=$((removed + 1))
done
echo "removed=$removed"
`;
}

export interface NodeTeardownInput {
  hostname: string;
  /** Where the deployer reaches the node (its VPN address). */
  nodeAddress: string;
  /** The other managers' VPN addresses, tried in order; empty: this node is the only manager. */
  managerAddresses: string[];
  mountPoints: string[];
  /** The ssh command line (program and options) the deployer uses. */
  ssh: string;
  /** Bound of each remote script, seconds. */
  timeoutSeconds: number;
  iface?: string;
}

const HOST_ADDRESS = /^[A-Za-z0-9.:-]+$/;

/**
 * The teardown program, run by /bin/sh on the deployer when the teardown resource is deleted
 * (before its droplet is: the node is replaced or leaves `nodes`): on the first other manager
 * that answers as a manager, drain and demote the node; on the node, leave and release (a node
 * that does not answer ssh is dead: said, and skipped); on that manager, remove it. If managers
 * are listed but none answers, nothing is done and it fails: the swarm needs care first.
 */
export function renderNodeTeardownProgram(t: NodeTeardownInput): string {
  const problems: string[] = [];
  for (const a of [t.nodeAddress, ...t.managerAddresses]) if (!HOST_ADDRESS.test(a)) problems.push(`address "${a}" is not a plain host address`);
  if (t.managerAddresses.includes(t.nodeAddress)) problems.push("the node cannot be its own surviving manager");
  if (!(Number.isInteger(t.timeoutSeconds) && t.timeoutSeconds > 0)) problems.push("timeoutSeconds must be a positive integer");
  check(problems);
  checkHost(t.hostname);
  const remote = (address: string) => `$ssh root@${address} timeout ${t.timeoutSeconds} sh -s`;
  // `cmd <<'TAG' || handler`, then the script, then TAG: the script is stdin, not shell code here.
  const heredoc = (tag: string, script: string, onFailure: string) => `<<'${tag}' || ${onFailure}\n${script}${tag}`;
  const leave = renderNodeLeaveScript({ mountPoints: t.mountPoints, lastManager: t.managerAddresses.length === 0, iface: t.iface });
  const managed = t.managerAddresses.length > 0;
  return `# Teardown of ${t.hostname} before its droplet is deleted (hardened-matrix SwarmCluster).
set -u
ssh="${t.ssh}"
mgr=
${
  managed
    ? `for m in ${t.managerAddresses.join(" ")}; do
  if [ "$($ssh -n root@$m "docker info --format '{{.Swarm.ControlAvailable}}'" 2>/dev/null)" = true ]; then mgr=$m; break; fi
done
if [ -z "$mgr" ]; then
  echo "teardown of ${t.hostname}: no other manager answers (tried ${t.managerAddresses.join(" ")}); nothing done. Bring the swarm back first (README, Removing a node)" >&2
  exit 1
fi
${remote("$mgr")} ${heredoc("HM_DRAIN", renderSwarmDrainScript(t.hostname), `{ echo "teardown of ${t.hostname}: drain on $mgr failed" >&2; exit 1; }`)}`
    : "# The only manager: no swarm survives it."
}
rc=0
${remote(t.nodeAddress)} ${heredoc("HM_LEAVE", leave, "rc=$?")}
case $rc in
  0) ;;
  255) echo "teardown of ${t.hostname}: ${t.nodeAddress} does not answer ssh: treated as dead (its volumes are detached without an unmount)" >&2 ;;
  *) echo "teardown of ${t.hostname}: leaving failed (exit $rc); the node keeps its volumes" >&2; exit 1 ;;
esac
${managed ? remote("$mgr") + " " + heredoc("HM_REMOVE", renderSwarmRemoveScript(t.hostname), `{ echo "teardown of ${t.hostname}: removing it on $mgr failed" >&2; exit 1; }`) : ""}
`;
}

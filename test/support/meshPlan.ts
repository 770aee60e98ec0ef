/**
 * The private network of a planned cloud stack, node by node: what each node receives and runs.
 * For tests that bring the mesh and the swarm up for real (network namespaces, wireguard-go, one
 * dockerd per node) from exactly what the program would deliver.
 *
 * How the scripts are meant to be run (this is how the program runs them, over ssh to the node):
 * - Every script is POSIX sh, run as root as `sh -s` with the script on stdin (no arguments, no
 *   environment needed). The swarm scripts use only the `docker` CLI against the local engine:
 *   run them with DOCKER_HOST=unix:///path/of/that/node's/engine.sock to stand in for the node.
 * - Each script prints `key=value` lines on stdout (its `# hm-prints:` line names the keys);
 *   parse them with `printed(stdout)`. Diagnostics go to stderr; a non-zero exit is a failure.
 * - Order:
 *   1. `wgConf` on every node (wg-quick format; `scripts.wgApply` installs it with wg-quick and
 *      systemd on a droplet; a test may instead feed `wg-quick strip`-ed text to `wg setconf`).
 *      Interface address: `meshAddress`/32, one route per peer's AllowedIPs /32, MTU 1420; peers'
 *      endpoints are their `vpcAddress`:51820.
 *   2. `scripts.init` on the first node of the list (the first manager). Prints `node-id` only:
 *      no script prints a join token. Before a first init it probes the other managers' mesh
 *      addresses on 2377 with python3 and refuses if one answers (a swarm already runs there).
 *   3. `scripts.join` on every other node, in list order (managers come first and must join one
 *      at a time; workers may join in parallel). The script holds no token: the program's join
 *      command (`joinCreate`) runs `tokenFetch` (`docker swarm join-token -q manager` for nodes
 *      whose `roles` include "manager", else `... worker`) on the first manager, then sends
 *      `joinStdin(token, script)` (a line `token=<value>`, then the script) to `sh -s` on the
 *      node. Do the same: run `tokenFetch` against the first manager's engine. Prints `node-id`.
 *   4. `scripts.label` on the first manager once every node has joined. Prints `labelled` and
 *      `removed` (counts). Swarm nodes are found by hostname: each engine's hostname must be the
 *      node's `name`.
 *   Every step is idempotent: running it again on a formed cluster changes nothing (label prints
 *   labelled=0 removed=0; init and join print the same node id).
 */
import assert from "node:assert/strict";
import { reveal, type Plan, type PlannedFile } from "../../plan/plan";
import { configFromApplyScript } from "../../components/render/wireguard";
import { TOKEN_VARIABLE, parsePrinted } from "../../components/render/swarm";

export interface MeshNodeArtifacts {
  name: string;
  roles: string[];
  vpcAddress: string;
  meshAddress: string;
  tailnetAddress: string;
  /** The node's WireGuard public key (base64). */
  publicKey: string;
  /** The wg-quick file exactly as delivered to /etc/wireguard/wg0.conf. */
  wgConf: string;
  scripts: {
    /** Installs wgConf and brings wg0 up (wg-quick, systemd). */
    wgApply: string;
    /** First manager only. */
    init?: string;
    /** Every node but the first manager. */
    join?: string;
    /** First manager only: labels every node, removes dead predecessors. */
    label?: string;
  };
  /** The node's teardown (its `delete` program, run by /bin/sh on the deployer before its droplet is deleted; ssh to VPN addresses). */
  teardown?: string;
  /** Every node but the first manager: the join command's `create` program, run by /bin/sh on the deployer. */
  joinCreate?: string;
  /** What `joinCreate` runs on the first manager (over ssh) to read this node's join token, as argv. */
  tokenFetch?: string[];
}

type PlanLike = Pick<Plan, "outputs"> & { files: PlannedFile[] | Map<string, string> };

function fileText(plan: PlanLike, suffix: string): string | undefined {
  if (plan.files instanceof Map) {
    for (const [path, content] of plan.files) if (path.endsWith(suffix)) return content;
    return undefined;
  }
  return plan.files.find((f) => f.path.endsWith(suffix))?.content;
}

/** The stdin the program sends a join script: the token line, then the script. */
export function joinStdin(token: string, script: string): string {
  return `${TOKEN_VARIABLE}=${token}\n${script}`;
}

/** The host and the command a join's `create` program reads the token from (its `hm_secret=$(ssh ... root@HOST CMD)` line). */
export function tokenFetchOf(create: string): { host: string; argv: string[] } {
  const m = /^hm_secret=\$\(ssh .* -n root@(\S+) ([^)]+)\) \|\| /m.exec(create);
  assert.ok(m, `not a join command: ${create}`);
  return { host: m[1]!, argv: m[2]!.split(" ") };
}

/** `key=value` lines a script printed. */
export function printed(stdout: string, keys: string[] = []): Record<string, string> {
  return parsePrinted(stdout, keys, "script");
}

/**
 * Per node, in swarm order: the first manager, then the other managers, then the workers.
 * Accepts a plan from planStack (test/support/plan) or one read from disk (planToDisk).
 */
export function meshArtifacts(plan: PlanLike): MeshNodeArtifacts[] {
  const outputs = reveal(plan.outputs) as { nodes?: Record<string, Record<string, unknown>> };
  assert.ok(outputs.nodes, "the plan has no nodes output (not a cloud stack?)");
  const all = Object.entries(outputs.nodes).map(([name, o]) => {
    const wgApply = fileText(plan, `-${name}-wg0/stdin.sh`);
    assert.ok(wgApply, `no wg0 apply script for ${name}`);
    const wgConf = configFromApplyScript(wgApply);
    assert.ok(wgConf, `no wg0.conf inside the apply script of ${name}`);
    const init = fileText(plan, `-${name}-init/stdin.sh`);
    const join = fileText(plan, `-${name}-join/stdin.sh`);
    const joinCreate = fileText(plan, `-${name}-join/create.sh`);
    const teardown = fileText(plan, `-${name}-teardown/delete.sh`);
    const node: MeshNodeArtifacts = {
      name,
      roles: o.roles as string[],
      vpcAddress: String(o.privateIpv4),
      meshAddress: String(o.meshIpv4),
      tailnetAddress: String(o.tailnetIpv4),
      publicKey: String(o.wireguardPublicKey),
      wgConf,
      scripts: { wgApply, ...(init ? { init, label: fileText(plan, "-labels/stdin.sh") } : {}), ...(join ? { join } : {}) },
      ...(joinCreate ? { joinCreate, tokenFetch: tokenFetchOf(joinCreate).argv } : {}),
      ...(teardown ? { teardown } : {}),
    };
    return node;
  });
  const first = all.filter((n) => n.scripts.init);
  assert.equal(first.length, 1, "exactly one node initialises the swarm");
  const rest = all.filter((n) => !n.scripts.init);
  return [...first, ...rest.filter((n) => n.roles.includes("manager")), ...rest.filter((n) => !n.roles.includes("manager"))];
}

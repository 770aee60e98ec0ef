/** Inputs of the tailnet policy (the `acl` of tailscale.Acl). */
export interface TailnetPolicyInput {
  /** Admin login emails. */
  admins: string[];
  /** The tag every node joins with, e.g. "tag:hm-node". */
  nodeTag: string;
  /** Ports admins may reach on nodes, e.g. 22 and the dashboard port. */
  adminPorts: number[];
  /** Local users admins may become over Tailscale SSH, e.g. ["root"] or the admin user. */
  sshUsers: string[];
  /**
   * A tag for deploying machines that are no admin's device (CI runners): they reach the nodes'
   * SSH (the docker provider and remote steps run over it) and nothing else, not the dashboard.
   */
  deployerTag?: string;
  /**
   * The tag of the Funnel device (ingress funnel): it alone gets the `funnel` node attribute
   * (tailscale/tailscale v1.102.3 tailcfg/tailcfg.go NodeAttrFunnel = "funnel"), and no ACL rule
   * names it, so it reaches nothing on the tailnet and nothing on the tailnet reaches it.
   */
  funnelTag?: string;
}

export const ADMIN_GROUP = "group:hm-admins";

/** Ports a test in the policy asserts admins can NOT reach, the first one not in adminPorts. */
const PROBE_DENIED_PORTS = [5432, 2375, 2377, 8008, 8080];

const EMAIL = /^[^\s@"]+@[^\s@"]+\.[^\s@"]+$/;
const TAG = /^tag:[A-Za-z][A-Za-z0-9-]*$/;
const UNIX_USER = /^[a-z_][a-z0-9_-]{0,31}$/;

export interface TailnetPolicy {
  groups: Record<string, string[]>;
  tagOwners: Record<string, string[]>;
  acls: { action: "accept"; src: string[]; dst: string[] }[];
  ssh: { action: "accept" | "check"; src: string[]; dst: string[]; users: string[] }[];
  nodeAttrs?: { target: string[]; attr: string[] }[];
  tests: { src: string; accept: string[]; deny: string[] }[];
}

function validate(p: TailnetPolicyInput): void {
  const problems: string[] = [];
  if (p.admins.length === 0) problems.push("admins is empty: no one could reach the nodes");
  for (const a of p.admins) if (!EMAIL.test(a)) problems.push(`admin "${a}" is not an email address`);
  if (new Set(p.admins).size !== p.admins.length) problems.push("admins lists someone twice");
  if (!TAG.test(p.nodeTag)) problems.push(`nodeTag "${p.nodeTag}" must look like tag:name`);
  if (p.adminPorts.length === 0) problems.push("adminPorts is empty");
  for (const port of p.adminPorts) if (!Number.isInteger(port) || port < 1 || port > 65535) problems.push(`admin port ${port} is not a port number`);
  if (p.funnelTag !== undefined && (!TAG.test(p.funnelTag) || p.funnelTag === p.nodeTag)) problems.push(`funnelTag "${p.funnelTag}" must look like tag:name and differ from nodeTag`);
  if (p.sshUsers.length === 0) problems.push("sshUsers is empty");
  for (const u of p.sshUsers) if (!UNIX_USER.test(u)) problems.push(`ssh user "${u}" is not a Unix user name`);
  if (p.deployerTag !== undefined && (!TAG.test(p.deployerTag) || p.deployerTag === p.nodeTag)) {
    problems.push(`deployerTag "${p.deployerTag}" must look like tag:name and differ from the node tag`);
  }
  if (problems.length > 0) throw new Error(`invalid tailnet policy input:\n  - ${problems.join("\n  - ")}`);
}

export function tailnetPolicy(p: TailnetPolicyInput): TailnetPolicy {
  validate(p);
  const ports = [...new Set(p.adminPorts)].sort((a, b) => a - b);
  const denied = PROBE_DENIED_PORTS.find((port) => !ports.includes(port)) ?? 5432;
  const deployer = p.deployerTag;
  return {
    groups: { [ADMIN_GROUP]: [...p.admins] },
    // Only admins may bring a device up with the node tag (the auth keys they mint carry it), the deployer or the funnel tag.
    tagOwners: {
      [p.nodeTag]: [ADMIN_GROUP],
      ...(deployer ? { [deployer]: [ADMIN_GROUP] } : {}),
      ...(p.funnelTag ? { [p.funnelTag]: [ADMIN_GROUP] } : {}),
    },
    // Tailscale denies by default: these rules are all the traffic the tailnet carries.
    acls: [
      { action: "accept", src: [ADMIN_GROUP], dst: [`${p.nodeTag}:${ports.join(",")}`] },
      // Deploying runners: SSH only (the docker provider is ssh://root@node).
      ...(deployer ? [{ action: "accept" as const, src: [deployer], dst: [`${p.nodeTag}:22`] }] : []),
      // Nodes may talk to each other over the tailnet (Swarm itself runs over wg0).
      { action: "accept", src: [p.nodeTag], dst: [`${p.nodeTag}:*`] },
    ],
    // "accept", not "check": the program reaches nodes non-interactively (remote commands over
    // SSH), which a browser re-authentication would break; admins already passed the tailnet's
    // login and device approval, and only they (and the deployer tag) can reach port 22 at all.
    ssh: [
      { action: "accept", src: [ADMIN_GROUP], dst: [p.nodeTag], users: [...new Set(p.sshUsers)] },
      ...(deployer ? [{ action: "accept" as const, src: [deployer], dst: [p.nodeTag], users: ["root"] }] : []),
    ],
    ...(p.funnelTag ? { nodeAttrs: [{ target: [p.funnelTag], attr: ["funnel"] }] } : {}),
    // Tailscale refuses a policy whose tests fail, so a broken rule never reaches the tailnet.
    tests: [
      {
        src: p.admins[0],
        accept: ports.map((port) => `${p.nodeTag}:${port}`),
        // The Funnel device is reached from the internet only, never over the tailnet.
        deny: [`${p.nodeTag}:${denied}`, ...(p.funnelTag ? [`${p.funnelTag}:443`] : [])],
      },
      ...(deployer ? [{ src: deployer, accept: [`${p.nodeTag}:22`], deny: ports.filter((port) => port !== 22).map((port) => `${p.nodeTag}:${port}`) }] : []),
    ],
  };
}

/** JSON text for the Tailscale ACL (tailscale.Acl `acl`). */
export function renderTailnetPolicy(p: TailnetPolicyInput): string {
  return `${JSON.stringify(tailnetPolicy(p), null, 2)}\n`;
}

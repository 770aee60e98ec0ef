/** The tailnet policy (JSON is valid HuJSON): admins reach the nodes, nodes reach each other, nothing else. */

export const ADMIN_GROUP = "group:hardened-matrix-admins";

export interface TailnetPolicyInput {
  /** Tailnet login emails of the admins. */
  admins: string[];
  /** Tag the nodes join with, e.g. "tag:hm-prod". */
  nodeTag: string;
  /** Ports the admins may reach on the nodes (SSH, dashboards). */
  adminPorts: number[];
}

export function renderTailnetPolicy(input: TailnetPolicyInput): string {
  if (!/^tag:[a-z0-9-]+$/.test(input.nodeTag)) throw new Error(`not a tailnet tag: ${input.nodeTag}`);
  if (input.admins.length === 0) throw new Error("a tailnet policy without admins locks everyone out of the nodes");
  const policy = {
    groups: { [ADMIN_GROUP]: [...input.admins].sort() },
    // Admins may create keys for the node tag; autogroup:admin lets the deployer's API key do it.
    tagOwners: { [input.nodeTag]: ["autogroup:admin", ADMIN_GROUP] },
    acls: [
      { action: "accept", src: [ADMIN_GROUP], dst: [...new Set(input.adminPorts)].sort((a, b) => a - b).map((p) => `${input.nodeTag}:${p}`) },
      { action: "accept", src: [input.nodeTag], dst: [`${input.nodeTag}:*`] },
    ],
    // Tailscale SSH: admins as root (the docker provider connects as root) or as a normal user.
    // "accept" rather than "check": a deployment runs unattended and cannot answer a browser prompt.
    ssh: [{ action: "accept", src: [ADMIN_GROUP], dst: [input.nodeTag], users: ["root", "autogroup:nonroot"] }],
  };
  return `${JSON.stringify(policy, null, 2)}\n`;
}

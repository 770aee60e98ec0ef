/**
 * Cloud firewall plans: which ports each node accepts from where, and where it may send. Pure: the
 * Nodes component turns each plan into a digitalocean.Firewall.
 */

export type Protocol = "tcp" | "udp" | "icmp";

/** Ports never open to anyone: SSH (admins use the VPN), the Docker API, Swarm, Postgres. */
export const FORBIDDEN_INBOUND_PORTS: ReadonlyArray<{ port: number; protocols: Protocol[]; what: string }> = [
  { port: 22, protocols: ["tcp"], what: "SSH (reached over the VPN only)" },
  { port: 2375, protocols: ["tcp"], what: "Docker API" },
  { port: 2376, protocols: ["tcp"], what: "Docker API over TLS" },
  { port: 2377, protocols: ["tcp"], what: "Swarm management" },
  { port: 7946, protocols: ["tcp", "udp"], what: "Swarm gossip" },
  { port: 4789, protocols: ["udp"], what: "Swarm VXLAN data path" },
  { port: 5432, protocols: ["tcp"], what: "Postgres" },
];

export const ANYWHERE = ["0.0.0.0/0", "::/0"];

/** Where traffic comes from or goes to: addresses and/or nodes of this deployment (by name). */
export interface Peers {
  addresses?: string[];
  nodes?: string[];
}

export interface InboundRule {
  protocol: Protocol;
  /** "443" or "49152-49251"; absent for icmp. */
  ports?: string;
  sources: Peers;
  reason: string;
}

export interface OutboundRule {
  protocol: Protocol;
  ports?: string;
  destinations: Peers;
  reason: string;
}

export interface FirewallPlan {
  name: string;
  /** Nodes (by name) the firewall applies to. */
  nodes: string[];
  inbound: InboundRule[];
  outbound: OutboundRule[];
  reason: string;
}

export interface FirewallInput {
  /** Prefix of firewall names (unique per account). */
  prefix: string;
  nodes: Array<{ name: string; roles: string[] }>;
  /** Ports the edge publishes over TCP (HTTP, HTTPS, federation). */
  edgePorts: number[];
  turn?: { port: number; tlsPort: number; minPort: number; maxPort: number };
  /** WireGuard mesh port, open only to the cluster's own nodes. */
  wireguardPort?: number;
  /** Tailscale's direct-connection port; without it Tailscale still works through DERP relays. */
  tailscalePort?: number;
}

/** Expands "a-b" or "a" to its bounds. */
export function portBounds(ports: string): [number, number] {
  const [lo, hi] = ports.split("-").map(Number) as [number, number?];
  return [lo, hi ?? lo];
}

/** Throws if a plan opens a forbidden port inbound, from anywhere. */
export function assertNoForbiddenInbound(plans: FirewallPlan[]): void {
  for (const plan of plans) {
    for (const rule of plan.inbound) {
      if (rule.protocol === "icmp" || rule.ports === undefined) continue;
      const [lo, hi] = portBounds(rule.ports);
      for (const f of FORBIDDEN_INBOUND_PORTS) {
        if (f.protocols.includes(rule.protocol) && f.port >= lo && f.port <= hi) {
          throw new Error(`firewall ${plan.name} would open ${f.port}/${rule.protocol} (${f.what})`);
        }
      }
    }
  }
}

export function firewallPlans(input: FirewallInput): FirewallPlan[] {
  const all = input.nodes.map((n) => n.name);
  const withRole = (role: string) => input.nodes.filter((n) => n.roles.includes(role)).map((n) => n.name);

  const base: FirewallPlan = {
    name: `${input.prefix}-base`,
    nodes: all,
    reason: "every node: ping, the mesh among the nodes, and outbound traffic",
    inbound: [{ protocol: "icmp", sources: { addresses: ANYWHERE }, reason: "ping and path-MTU discovery" }],
    // Explicit: a DigitalOcean firewall without outbound rules drops all egress. Federation, ACME,
    // package mirrors, the tailnet and TURN relaying all reach arbitrary hosts and ports.
    outbound: (["tcp", "udp"] as const)
      .map((protocol): OutboundRule => ({ protocol, ports: "1-65535", destinations: { addresses: ANYWHERE }, reason: "federation, ACME, packages, VPN, TURN relaying" }))
      .concat([{ protocol: "icmp", destinations: { addresses: ANYWHERE }, reason: "ping and path-MTU discovery" }]),
  };
  if (input.wireguardPort !== undefined) {
    base.inbound.push({ protocol: "udp", ports: String(input.wireguardPort), sources: { nodes: all }, reason: "WireGuard mesh, only between this deployment's nodes" });
  }
  if (input.tailscalePort !== undefined) {
    base.inbound.push({ protocol: "udp", ports: String(input.tailscalePort), sources: { addresses: ANYWHERE }, reason: "Tailscale direct connections (WireGuard-authenticated)" });
  }

  const plans = [base];
  const edge = withRole("edge");
  if (edge.length > 0) {
    plans.push({
      name: `${input.prefix}-edge`,
      nodes: edge,
      reason: "the public Matrix surface, served by Traefik",
      inbound: [...new Set(input.edgePorts)].map((p) => ({ protocol: "tcp", ports: String(p), sources: { addresses: ANYWHERE }, reason: "HTTP(S) and federation" })),
      outbound: [],
    });
  }
  const turnNodes = withRole("turn");
  if (input.turn && turnNodes.length > 0) {
    const t = input.turn;
    plans.push({
      name: `${input.prefix}-turn`,
      nodes: turnNodes,
      reason: "TURN for calls",
      inbound: [
        ...(["tcp", "udp"] as const).flatMap((protocol) => [
          { protocol, ports: String(t.port), sources: { addresses: ANYWHERE }, reason: "TURN" },
          { protocol, ports: String(t.tlsPort), sources: { addresses: ANYWHERE }, reason: "TURN over TLS/DTLS" },
        ]),
        { protocol: "udp", ports: `${t.minPort}-${t.maxPort}`, sources: { addresses: ANYWHERE }, reason: "TURN relay range" },
      ],
      outbound: [],
    });
  }
  assertNoForbiddenInbound(plans);
  return plans;
}

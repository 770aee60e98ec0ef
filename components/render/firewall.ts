export type NodeRole = "manager" | "edge" | "db" | "turn";

/** One rule of a digitalocean.Firewall, as plain data (inbound rules use sources, outbound destinations). */
export interface FirewallRule {
  protocol: "tcp" | "udp" | "icmp";
  portRange?: string;
  sourceAddresses?: string[];
  sourceTags?: string[];
  destinationAddresses?: string[];
  reason: string;
}

export interface FirewallPlan {
  name: string;
  /** Droplet tags it applies to. */
  tags: string[];
  inbound: FirewallRule[];
  outbound: FirewallRule[];
}

export interface FirewallInput {
  clusterTag: string;
  roleTag: (r: NodeRole) => string;
  httpPort: number;
  httpsPort: number;
  federationPort: number;
  /** `tlsPort` only when coTURN serves TLS/DTLS (it runs no-tls and no-dtls otherwise: nothing listens). */
  turn: { port: number; tlsPort?: number; minPort: number; maxPort: number } | undefined;
  wireguardPort: number;
  tailscaleDirectPort?: number;
  /**
   * False with ingress funnel: the edge opens nothing to the internet (Tailscale carries every
   * request over its own outbound connections), and ICMP is accepted only from the cluster.
   */
  publicIngress?: boolean;
}

/**
 * Never open to the internet: SSH (admins use the VPN), the Docker API, Swarm control and data
 * (wg0 only), Postgres, Dendrite's own port, Traefik's internal and dashboard ports, Headscale's
 * metrics and gRPC.
 */
export const FORBIDDEN_INBOUND_PORTS: readonly number[] = Object.freeze([22, 2375, 2376, 2377, 4789, 5432, 7946, 8008, 8080, 9000, 9090, 9443, 50443]);

export const ANYWHERE: readonly string[] = Object.freeze(["0.0.0.0/0", "::/0"]);

export const ALL_PORTS = "1-65535";

// DigitalOcean tags: letters, digits, ":", "-", "_", at most 255 characters.
const DO_TAG = /^[A-Za-z0-9:_-]{1,255}$/;

/** Inclusive bounds of a DigitalOcean port range ("80", "8000-9000", "1-65535"; "all" and "0" mean every port). */
export function portBounds(portRange: string): [number, number] {
  if (portRange === "all" || portRange === "0") return [1, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(portRange);
  if (!m) throw new Error(`port range "${portRange}" is not N or N-M`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > hi) throw new Error(`port range "${portRange}" is outside 1-65535 or reversed`);
  return [lo, hi];
}

function checkPort(name: string, port: number, problems: string[]): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) problems.push(`${name} ${port} is not a port number`);
}

const anywhere = (): string[] => [...ANYWHERE];

/**
 * Egress stays open on every plan: DigitalOcean blocks all egress of a droplet whose firewalls
 * have no outbound rule, and the nodes legitimately reach arbitrary hosts and ports (apt, ACME,
 * DNS, federation with servers on any port, TURN relaying to any peer, Tailscale DERP/STUN,
 * WireGuard peers). Inbound is where the attack surface is.
 */
function outboundRules(): FirewallRule[] {
  return [
    { protocol: "tcp", portRange: ALL_PORTS, destinationAddresses: anywhere(), reason: "egress: apt, ACME, DNS over TCP, federation to servers on any port" },
    { protocol: "udp", portRange: ALL_PORTS, destinationAddresses: anywhere(), reason: "egress: DNS, NTP, TURN relaying to any peer, WireGuard and Tailscale (STUN/DERP) peers" },
    { protocol: "icmp", destinationAddresses: anywhere(), reason: "egress: path MTU discovery and diagnostics" },
  ];
}

export function firewallPlans(input: FirewallInput): FirewallPlan[] {
  const problems: string[] = [];
  if (!DO_TAG.test(input.clusterTag)) problems.push(`clusterTag "${input.clusterTag}" is not a DigitalOcean tag`);
  const roleTags = new Map<NodeRole, string>();
  for (const role of ["edge", "turn"] as const) {
    const tag = input.roleTag(role);
    if (!DO_TAG.test(tag)) problems.push(`roleTag(${role}) "${tag}" is not a DigitalOcean tag`);
    roleTags.set(role, tag);
  }
  checkPort("httpPort", input.httpPort, problems);
  checkPort("httpsPort", input.httpsPort, problems);
  checkPort("federationPort", input.federationPort, problems);
  checkPort("wireguardPort", input.wireguardPort, problems);
  if (input.tailscaleDirectPort !== undefined) checkPort("tailscaleDirectPort", input.tailscaleDirectPort, problems);
  if (input.turn) {
    checkPort("turn.port", input.turn.port, problems);
    if (input.turn.tlsPort !== undefined) checkPort("turn.tlsPort", input.turn.tlsPort, problems);
    checkPort("turn.minPort", input.turn.minPort, problems);
    checkPort("turn.maxPort", input.turn.maxPort, problems);
    if (input.turn.minPort > input.turn.maxPort) problems.push(`turn relay range ${input.turn.minPort}-${input.turn.maxPort} is reversed`);
  }
  if (problems.length > 0) throw new Error(`invalid firewall input:\n  - ${problems.join("\n  - ")}`);

  const base = input.clusterTag.replace(/[^A-Za-z0-9.-]/g, "-");
  const plans: FirewallPlan[] = [
    {
      name: `${base}-cluster`,
      tags: [input.clusterTag],
      inbound: [
        {
          protocol: "udp",
          portRange: String(input.wireguardPort),
          sourceTags: [input.clusterTag],
          reason: "WireGuard mesh between the cluster's own droplets; Swarm runs only inside it",
        },
        input.publicIngress === false
          ? { protocol: "icmp", sourceTags: [input.clusterTag], reason: "path MTU discovery and diagnostics between the cluster's droplets (funnel: nothing from the internet)" }
          : { protocol: "icmp", sourceAddresses: anywhere(), reason: "path MTU discovery (wg0's MTU depends on it) and diagnostics" },
      ],
      outbound: outboundRules(),
    },
  ];
  if (input.publicIngress !== false) {
    plans.push({
      name: `${base}-edge`,
      tags: [roleTags.get("edge")!],
      inbound: [
        { protocol: "tcp", portRange: String(input.httpPort), sourceAddresses: anywhere(), reason: "HTTP: redirect to HTTPS and ACME HTTP-01" },
        { protocol: "tcp", portRange: String(input.httpsPort), sourceAddresses: anywhere(), reason: "HTTPS: Matrix client API and well-known" },
        { protocol: "tcp", portRange: String(input.federationPort), sourceAddresses: anywhere(), reason: "Matrix federation" },
      ],
      outbound: outboundRules(),
    });
  }
  if (input.turn) {
    const t = input.turn;
    plans.push({
      name: `${base}-turn`,
      tags: [roleTags.get("turn")!],
      inbound: [
        { protocol: "udp", portRange: String(t.port), sourceAddresses: anywhere(), reason: "TURN/STUN over UDP" },
        { protocol: "tcp", portRange: String(t.port), sourceAddresses: anywhere(), reason: "TURN over TCP (clients behind UDP-blocking networks)" },
        ...(t.tlsPort === undefined
          ? []
          : [
              { protocol: "udp" as const, portRange: String(t.tlsPort), sourceAddresses: anywhere(), reason: "TURN over DTLS" },
              { protocol: "tcp" as const, portRange: String(t.tlsPort), sourceAddresses: anywhere(), reason: "TURN over TLS" },
            ]),
        // coTURN runs with no-tcp-relay: the relay range is UDP only.
        { protocol: "udp", portRange: `${t.minPort}-${t.maxPort}`, sourceAddresses: anywhere(), reason: "TURN relay ports (UDP only: no-tcp-relay)" },
      ],
      outbound: outboundRules(),
    });
  }
  if (input.tailscaleDirectPort !== undefined) {
    plans.push({
      name: `${base}-tailscale`,
      tags: [input.clusterTag],
      inbound: [
        {
          protocol: "udp",
          portRange: String(input.tailscaleDirectPort),
          sourceAddresses: anywhere(),
          reason: "Tailscale direct (peer-to-peer) connections instead of DERP relays; WireGuard-authenticated",
        },
      ],
      outbound: outboundRules(),
    });
  }

  // Self-check: a configured port or relay range must never expose a forbidden port.
  for (const plan of plans) {
    for (const rule of plan.inbound) {
      if (rule.portRange === undefined) continue;
      const [lo, hi] = portBounds(rule.portRange);
      const hit = FORBIDDEN_INBOUND_PORTS.filter((p) => p >= lo && p <= hi);
      if (hit.length > 0) throw new Error(`firewall ${plan.name}: ${rule.protocol} ${rule.portRange} (${rule.reason}) would expose forbidden port(s) ${hit.join(", ")}`);
      // The mesh port is for cluster members only; DigitalOcean unions rules, so no public UDP rule may cover it.
      if (rule.protocol === "udp" && rule.sourceAddresses && input.wireguardPort >= lo && input.wireguardPort <= hi) {
        throw new Error(`firewall ${plan.name}: udp ${rule.portRange} (${rule.reason}) would open the WireGuard port ${input.wireguardPort} to everyone`);
      }
    }
  }
  return plans;
}

import { ANYWHERE, FORBIDDEN_INBOUND_PORTS, ALL_PORTS, portBounds, type FirewallPlan } from "./firewall";
import { HEADSCALE_PORTS } from "./headscale";

export interface HeadscaleFirewallInput {
  /** The control node's own DigitalOcean tag: not the cluster tag, so none of the cluster's rules apply to it. */
  tag: string;
  /** Embedded DERP: adds STUN on 3478/udp. */
  derp: boolean;
}

const DO_TAG = /^[A-Za-z0-9:_-]{1,255}$/;

/**
 * The Headscale control node's only firewall: 443 (control protocol, REST API behind its API key,
 * TLS-ALPN-01), 80 (the bootstrap's sealed blob, for a bounded time; nothing listens there after),
 * 3478/udp only with embedded DERP, and ICMP. No SSH: the node is configured by cloud-init alone.
 */
export function headscaleFirewallPlan(input: HeadscaleFirewallInput): FirewallPlan {
  if (!DO_TAG.test(input.tag)) throw new Error(`invalid firewall input: tag "${input.tag}" is not a DigitalOcean tag`);
  const anywhere = (): string[] => [...ANYWHERE];
  const inbound: FirewallPlan["inbound"] = [
    { protocol: "tcp", portRange: String(HEADSCALE_PORTS.https), sourceAddresses: anywhere(), reason: "Headscale: control protocol, API (API key), ACME TLS-ALPN-01" },
    { protocol: "tcp", portRange: String(HEADSCALE_PORTS.http), sourceAddresses: anywhere(), reason: "Headscale bootstrap: the sealed API key, for a bounded time after first boot" },
    { protocol: "icmp", sourceAddresses: anywhere(), reason: "path MTU discovery and diagnostics" },
  ];
  if (input.derp) inbound.push({ protocol: "udp", portRange: String(HEADSCALE_PORTS.stun), sourceAddresses: anywhere(), reason: "Headscale's embedded DERP: STUN" });
  for (const rule of inbound) {
    if (rule.portRange === undefined) continue;
    const [lo, hi] = portBounds(rule.portRange);
    const hit = FORBIDDEN_INBOUND_PORTS.filter((p) => p >= lo && p <= hi);
    if (hit.length > 0) throw new Error(`firewall headscale: ${rule.protocol} ${rule.portRange} would expose forbidden port(s) ${hit.join(", ")}`);
  }
  return {
    name: `${input.tag.replace(/[^A-Za-z0-9.-]/g, "-")}-fw`,
    tags: [input.tag],
    inbound,
    // Same open egress as every node (render/firewall.ts outboundRules): apt, ACME, image pulls, DERP map.
    outbound: [
      { protocol: "tcp", portRange: ALL_PORTS, destinationAddresses: anywhere(), reason: "egress: apt, ACME, image pull, DERP map" },
      { protocol: "udp", portRange: ALL_PORTS, destinationAddresses: anywhere(), reason: "egress: DNS, NTP" },
      { protocol: "icmp", destinationAddresses: anywhere(), reason: "egress: path MTU discovery and diagnostics" },
    ],
  };
}

import { isIPv4, isIPv6 } from "node:net";

/** Inputs of coTURN's turnserver.conf. */
export interface TurnServerConfig {
  realm: string;
  /** `static-auth-secret`: the same value as Dendrite's `turn_shared_secret`. */
  sharedSecret: string;
  /** Public IPv4 of the TURN node. Always explicit: the image's default looks it up from an outside service. */
  externalIp: string;
  /** Bind address; all interfaces when absent. */
  listeningIp?: string;
  listeningPort: number;
  tlsListeningPort: number;
  /** Relay port range (UDP only: `no-tcp-relay`). */
  minPort: number;
  maxPort: number;
  /** When absent, TLS and DTLS listeners are off. */
  tls?: { certFile: string; keyFile: string };
  /** Extra CIDRs of this stack (mesh, VPC, Swarm address pool), denied on top of PUBLIC_DENIED_PEER_RANGES. */
  deniedPeerRanges: string[];
  userQuota: number;
  totalQuota: number;
  /** Must be writable on a read-only root (a tmpfs). Default /var/tmp/turnserver.pid, coturn's own non-root default. */
  pidFile?: string;
}

/** Private and special-purpose ranges no TURN client may relay to (FACTS.md, coTURN). */
export const PUBLIC_DENIED_PEER_RANGES: readonly string[] = Object.freeze([
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "240.0.0.0/4",
  "::1",
  "64:ff9b::/96",
  "::ffff:0:0/96",
  "100::/64",
  "2001::/23",
  "2002::/16",
  "fc00::/7",
  "fe80::/10",
]);

export const DEFAULT_TURN_PIDFILE = "/var/tmp/turnserver.pid";

// ---- addresses ---------------------------------------------------------------------------

function ipv4ToBigInt(ip: string): bigint {
  return ip.split(".").reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
}

function bigIntToIpv4(n: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => ((n >> s) & 0xffn).toString()).join(".");
}

function ipv6ToBigInt(ip: string): bigint {
  let text = ip;
  // A trailing dotted quad (::ffff:1.2.3.4) counts as two groups.
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const v4 = ipv4ToBigInt(quad[1]);
    text = `${text.slice(0, quad.index)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.split("::");
  const headGroups = head ? head.split(":") : [];
  const tailGroups = tail === undefined ? [] : tail ? tail.split(":") : [];
  const missing = 8 - headGroups.length - tailGroups.length;
  const groups = [...headGroups, ...Array<string>(tail === undefined ? 0 : missing).fill("0"), ...tailGroups];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run (>= 2) of zero groups as "::". */
function bigIntToIpv6(n: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(16 * (7 - i))) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/**
 * coTURN (4.6 through 4.17) reads `denied-peer-ip`/`allowed-peer-ip` as one address or
 * `first-last`; a CIDR such as `10.0.0.0/8` is logged as "Wrong address format" and ignored,
 * so the range would silently not be denied. This turns a CIDR (or a single address) into
 * coTURN's form. Host bits must be zero: `10.1.2.3/8` is refused as a likely typo.
 */
export function cidrToCoturnRange(cidr: string): string {
  const [addr, prefixText, extra] = cidr.trim().split("/");
  if (extra !== undefined) throw new Error(`invalid CIDR "${cidr}"`);
  const v4 = isIPv4(addr);
  if (!v4 && !isIPv6(addr)) throw new Error(`invalid CIDR "${cidr}": "${addr}" is not an IP address`);
  if (!v4 && addr.includes("%")) throw new Error(`invalid CIDR "${cidr}": zone indexes are not allowed`);
  const bits = v4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) throw new Error(`invalid CIDR "${cidr}": bad prefix length`);
  const prefix = prefixText === undefined ? bits : Number(prefixText);
  if (prefix > bits) throw new Error(`invalid CIDR "${cidr}": prefix length above ${bits}`);
  const value = v4 ? ipv4ToBigInt(addr) : ipv6ToBigInt(addr);
  const hostMask = (1n << BigInt(bits - prefix)) - 1n;
  if ((value & hostMask) !== 0n) throw new Error(`invalid CIDR "${cidr}": host bits are set`);
  const format = v4 ? bigIntToIpv4 : bigIntToIpv6;
  const first = format(value);
  // coTURN treats an all-zero range end as "any" and would match everything: never emit one.
  if (prefix === bits) {
    if (value === 0n) throw new Error(`invalid CIDR "${cidr}": the unspecified address is not a peer`);
    return first;
  }
  return `${first}-${format(value | hostMask)}`;
}

// ---- validation ------------------------------------------------------------------------

function checkPort(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1 || value > 65535) {
    throw new Error(`coturn: ${name} must be an integer port 1-65535, got ${value}`);
  }
}

function checkPositiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new Error(`coturn: ${name} must be a positive integer, got ${value}`);
}

const hostName = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const safePath = /^\/[A-Za-z0-9._\/-]+$/;

function checkSpecificIpv4(name: string, value: string): void {
  if (!isIPv4(value)) throw new Error(`coturn: ${name} must be an IPv4 address, got "${value}"`);
  if (value === "0.0.0.0") throw new Error(`coturn: ${name} must be a specific address, not 0.0.0.0`);
}

function validate(c: TurnServerConfig): void {
  if (!hostName.test(c.realm)) throw new Error(`coturn: realm must be a DNS name, got "${c.realm}"`);
  if (c.sharedSecret.length === 0) throw new Error("coturn: sharedSecret must not be empty");
  // The config parser strips a leading '=' or '"' and ends a value at a line break; keep it to printable ASCII.
  if (!/^[\x21-\x7e]+$/.test(c.sharedSecret) || c.sharedSecret.includes('"') || c.sharedSecret.startsWith("=")) {
    throw new Error('coturn: sharedSecret must be printable ASCII without spaces or \'"\' and must not start with "="');
  }
  if (c.sharedSecret.length > 256) throw new Error("coturn: sharedSecret must be at most 256 characters");
  checkSpecificIpv4("externalIp", c.externalIp);
  if (c.listeningIp !== undefined && !isIPv4(c.listeningIp) && !isIPv6(c.listeningIp)) {
    throw new Error(`coturn: listeningIp must be an IP address, got "${c.listeningIp}"`);
  }
  checkPort("listeningPort", c.listeningPort);
  checkPort("tlsListeningPort", c.tlsListeningPort);
  checkPort("minPort", c.minPort);
  checkPort("maxPort", c.maxPort);
  if (c.listeningPort === c.tlsListeningPort) throw new Error("coturn: listeningPort and tlsListeningPort must differ");
  if (c.minPort >= c.maxPort) throw new Error(`coturn: minPort (${c.minPort}) must be below maxPort (${c.maxPort})`);
  if (c.minPort < 1024) throw new Error(`coturn: the relay range must start at 1024 or above, got ${c.minPort}`);
  for (const [name, port] of [["listeningPort", c.listeningPort], ["tlsListeningPort", c.tlsListeningPort]] as const) {
    if (port >= c.minPort && port <= c.maxPort) throw new Error(`coturn: ${name} ${port} lies inside the relay range`);
  }
  checkPositiveInt("userQuota", c.userQuota);
  checkPositiveInt("totalQuota", c.totalQuota);
  if (c.userQuota > c.totalQuota) throw new Error("coturn: userQuota must not exceed totalQuota");
  if (c.tls) {
    if (!safePath.test(c.tls.certFile)) throw new Error(`coturn: tls.certFile must be an absolute path, got "${c.tls.certFile}"`);
    if (!safePath.test(c.tls.keyFile)) throw new Error(`coturn: tls.keyFile must be an absolute path, got "${c.tls.keyFile}"`);
  }
  if (c.pidFile !== undefined && !safePath.test(c.pidFile)) throw new Error(`coturn: pidFile must be an absolute path, got "${c.pidFile}"`);
}

// ---- rendering -------------------------------------------------------------------------

export function renderTurnserverConf(c: TurnServerConfig): string {
  validate(c);
  const denied: string[] = [];
  for (const cidr of [...PUBLIC_DENIED_PEER_RANGES, ...c.deniedPeerRanges]) {
    let range: string;
    try {
      range = cidrToCoturnRange(cidr);
    } catch (e) {
      throw new Error(`coturn: deniedPeerRanges: ${(e as Error).message}`);
    }
    if (!denied.includes(range)) denied.push(range);
  }

  const lines: string[] = [
    "# coturn turnserver.conf, rendered by hardened-matrix. Do not edit by hand.",
    "",
    "# Listeners",
    ...(c.listeningIp !== undefined ? [`listening-ip=${c.listeningIp}`] : []),
    `listening-port=${c.listeningPort}`,
    ...(c.tls
      ? [`tls-listening-port=${c.tlsListeningPort}`, `cert=${c.tls.certFile}`, `pkey=${c.tls.keyFile}`]
      : ["no-tls", "no-dtls"]),
    "# Set explicitly: the image's default asks an outside service.",
    `external-ip=${c.externalIp}`,
    `min-port=${c.minPort}`,
    `max-port=${c.maxPort}`,
    "",
    "# Auth: TURN REST API credentials minted by Dendrite from the shared secret",
    "use-auth-secret",
    `static-auth-secret=${c.sharedSecret}`,
    `realm=${c.realm}`,
    "fingerprint",
    "stale-nonce=600",
    "",
    "# Abuse limits",
    "no-tcp-relay",
    "no-multicast-peers",
    `user-quota=${c.userQuota}`,
    `total-quota=${c.totalQuota}`,
    "# NAT discovery answers amplify reflection attacks; calls do not need them.",
    "no-rfc5780",
    "response-origin-only-with-rfc5780",
    "no-software-attribute",
    "no-cli",
    "",
    "# Logs to stdout for Docker; the pid file must land on a tmpfs (read-only root).",
    "log-file=stdout",
    `pidfile=${c.pidFile ?? DEFAULT_TURN_PIDFILE}`,
    "",
    "# Peers: never relay into private, special or this stack's own ranges (coturn wants first-last, not CIDR).",
    ...denied.map((r) => `denied-peer-ip=${r}`),
    "# Our own public address stays reachable (TURN-to-TURN between clients on this server).",
    `allowed-peer-ip=${c.externalIp}`,
    "",
  ];
  return lines.join("\n");
}

/** The URIs Dendrite hands to clients (`client_api.turn.turn_uris`). */
export function turnUris(host: string, c: { listeningPort: number; tlsListeningPort: number; tls: boolean }): string[] {
  if (!hostName.test(host)) throw new Error(`turnUris: host must be a DNS name or IPv4 address, got "${host}"`);
  checkPort("listeningPort", c.listeningPort);
  checkPort("tlsListeningPort", c.tlsListeningPort);
  const uris = [`turn:${host}:${c.listeningPort}?transport=udp`, `turn:${host}:${c.listeningPort}?transport=tcp`];
  if (c.tls) uris.push(`turns:${host}:${c.tlsListeningPort}?transport=tcp`);
  return uris;
}

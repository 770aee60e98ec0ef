import { createHash, createPrivateKey, createPublicKey, hkdfSync } from "node:crypto";

/**
 * The WireGuard mesh, rendered from plain values: keys, addresses, the wg-quick file and the
 * script that installs it on a node. Knows nothing of Pulumi.
 */

/** WireGuard's MTU inside a 1500-byte underlay (the overlays are sized to fit it). */
export const WIREGUARD_MTU = 1420;
export const WG_INTERFACE = "wg0";
export const WG_CONF_PATH = `/etc/wireguard/${WG_INTERFACE}.conf`;
/** The heredoc delimiter the apply script embeds the file under (the offline plan extracts it). */
export const WG_CONF_HEREDOC = `HM_FILE_${WG_INTERFACE}.conf`;

// ---- keys ----------------------------------------------------------------------------------

// PKCS#8 and SPKI DER prefixes of an X25519 key (RFC 8410, id-X25519 = 1.3.101.110).
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");

/**
 * A WireGuard private key from 32 random bytes: clamped as Curve25519 requires, exactly as
 * `wg genkey` prints it (wireguard-tools src/genkey.c calls curve25519_clamp_secret, src/curve25519.h).
 */
export function wireguardPrivateKey(random: Buffer): string {
  if (random.length !== 32) throw new Error(`a WireGuard private key needs 32 bytes, got ${random.length}`);
  const k = Buffer.from(random);
  k[0]! &= 248;
  k[31] = (k[31]! & 127) | 64;
  return k.toString("base64");
}

/** The X25519 public key of a base64 private key, as `wg pubkey` prints it. */
export function wireguardPublicKey(privateKeyBase64: string): string {
  const raw = Buffer.from(privateKeyBase64, "base64");
  if (raw.length !== 32) throw new Error("a WireGuard private key is 32 bytes, base64");
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
  const spki = createPublicKey(key).export({ format: "der", type: "spki" });
  return spki.subarray(spki.length - 32).toString("base64");
}

/** HKDF salt: versioned, so a future scheme never derives the same keys from the same master. */
const PSK_SALT = "hardened-matrix wireguard psk v1";

/**
 * The preshared key of the pair {a, b}: HKDF-SHA256 (RFC 5869) of the mesh master secret over the
 * sorted pair of node names. Symmetric, different for every pair, and rotated for every pair at
 * once by rotating the master.
 */
export function pairPresharedKey(master: Buffer, a: string, b: string): string {
  if (a === b) throw new Error(`no preshared key between ${a} and itself`);
  if (master.length < 32) throw new Error("the mesh master secret must be at least 32 bytes");
  const [x, y] = [a, b].sort();
  return Buffer.from(hkdfSync("sha256", master, PSK_SALT, `${x}\u0000${y}`, 32)).toString("base64");
}

// ---- addresses -----------------------------------------------------------------------------

export function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

/**
 * A node's mesh address: a hash of its name into the host range of `cidr` (network and broadcast
 * addresses excluded). It depends on nothing but the name, so adding or removing a node never
 * renumbers another. Two names can collide: `meshAddressCollisions` finds them.
 */
export function meshAddress(name: string, cidr: string): string {
  const [ip, lenText] = cidr.split("/") as [string, string];
  const len = Number(lenText);
  if (!(len >= 8 && len <= 30)) throw new Error(`mesh range ${cidr} must be between a /8 and a /30`);
  const size = 2 ** (32 - len);
  const base = ipv4ToInt(ip) - (ipv4ToInt(ip) % size);
  const h = createHash("sha256").update(`hardened-matrix mesh address\u0000${name}`).digest().readUInt32BE(0);
  return intToIpv4(base + 1 + (h % (size - 2)));
}

/** Pairs of node names that would get the same mesh address in `cidr`. */
export function meshAddressCollisions(names: string[], cidr: string): Array<[string, string, string]> {
  const seen = new Map<string, string>();
  const found: Array<[string, string, string]> = [];
  for (const name of names) {
    const address = meshAddress(name, cidr);
    const other = seen.get(address);
    if (other !== undefined) found.push([other, name, address]);
    else seen.set(address, name);
  }
  return found;
}

// ---- wg-quick file -------------------------------------------------------------------------

export interface WireguardPeer {
  name: string;
  publicKey: string;
  presharedKey: string;
  meshAddress: string;
  /** Where the peer's WireGuard listens: its VPC private address. */
  endpoint: string;
}

export interface WireguardConfigInput {
  name: string;
  privateKey: string;
  meshAddress: string;
  listenPort: number;
  peers: WireguardPeer[];
}

const KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function validate(c: WireguardConfigInput): void {
  const problems: string[] = [];
  if (!KEY.test(c.privateKey)) problems.push(`${c.name}: private key is not a base64 32-byte key`);
  if (!IPV4.test(c.meshAddress)) problems.push(`${c.name}: mesh address "${c.meshAddress}" is not IPv4`);
  if (!(Number.isInteger(c.listenPort) && c.listenPort >= 1 && c.listenPort <= 65535)) problems.push(`${c.name}: listen port ${c.listenPort} is not a port`);
  const addresses = new Set([c.meshAddress]);
  for (const p of c.peers) {
    if (p.name === c.name) problems.push(`${c.name}: lists itself as a peer`);
    if (!KEY.test(p.publicKey)) problems.push(`peer ${p.name}: public key is not a base64 32-byte key`);
    if (!KEY.test(p.presharedKey)) problems.push(`peer ${p.name}: preshared key is not a base64 32-byte key`);
    if (!IPV4.test(p.meshAddress)) problems.push(`peer ${p.name}: mesh address "${p.meshAddress}" is not IPv4`);
    if (addresses.has(p.meshAddress)) problems.push(`peer ${p.name}: mesh address ${p.meshAddress} is used twice`);
    addresses.add(p.meshAddress);
    if (!IPV4.test(p.endpoint)) problems.push(`peer ${p.name}: endpoint "${p.endpoint}" is not an IPv4 address`);
  }
  if (problems.length > 0) throw new Error(`invalid WireGuard config:\n  - ${problems.join("\n  - ")}`);
}

/**
 * /etc/wireguard/wg0.conf for wg-quick (wireguard-tools src/man/wg-quick.8, src/wg-quick/linux.bash).
 * wg-quick rather than systemd-networkd: the droplet's own interfaces are configured by whatever
 * the image uses, and starting networkd there would let it manage (with its default
 * ManageForeignRoutes=yes, remove) routes it did not create. wg-quick touches only wg0: the
 * Address is a /32 (no prefix route), no DNS= (resolv.conf untouched), no Table= (the default:
 * one route per peer's AllowedIPs, here a /32 each; `add_route` in linux.bash), no 0.0.0.0/0 (so no
 * policy routing or fwmark rules), no SaveConfig (the file stays what the program wrote).
 */
export function renderWireguardConfig(c: WireguardConfigInput): string {
  validate(c);
  const lines = [
    `# ${c.name}: written by hardened-matrix; local edits are overwritten.`,
    "[Interface]",
    `Address = ${c.meshAddress}/32`,
    `ListenPort = ${c.listenPort}`,
    `MTU = ${WIREGUARD_MTU}`,
    `PrivateKey = ${c.privateKey}`,
  ];
  for (const p of [...c.peers].sort((x, y) => x.name.localeCompare(y.name))) {
    lines.push(
      "",
      "[Peer]",
      `# ${p.name}`,
      `PublicKey = ${p.publicKey}`,
      `PresharedKey = ${p.presharedKey}`,
      `AllowedIPs = ${p.meshAddress}/32`,
      `Endpoint = ${p.endpoint}:${c.listenPort}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** The wg-quick file embedded in an apply script (what the node receives), or undefined. */
export function configFromApplyScript(script: string): string | undefined {
  const start = `<<'${WG_CONF_HEREDOC}'\n`;
  const i = script.indexOf(start);
  if (i < 0) return undefined;
  const body = script.slice(i + start.length);
  const end = body.indexOf(`\n${WG_CONF_HEREDOC}\n`);
  return end < 0 ? undefined : `${body.slice(0, end)}\n`;
}

/**
 * The script (run as root with `sh -s`, the file inside it on stdin) that installs wg0.conf
 * and brings the mesh up. Idempotent: an unchanged file changes nothing. A changed file is
 * swapped in atomically (0600 root); if only peers or keys changed, the running interface is
 * synced in place (`wg syncconf`, no tunnel drop) and the peers' /32 routes reconciled; if the
 * interface's own address, port or MTU changed, wg-quick@wg0 is restarted. Prints `changed=0|1`.
 */
export function renderWireguardApplyScript(config: string, iface: string = WG_INTERFACE): string {
  if (config.includes(`\n${WG_CONF_HEREDOC}\n`) || !config.endsWith("\n")) throw new Error("the WireGuard file cannot be embedded as is");
  // Another name only for tests on a shared machine (wireguard-go's sockets are per name).
  if (!/^[a-z][a-z0-9]{0,14}$/.test(iface)) throw new Error(`interface name "${iface}" is not 1-15 lower-case letters and digits`);
  const conf = `/etc/wireguard/${iface}.conf`;
  return `#!/bin/sh
# Installs ${conf} and brings ${iface} up (hardened-matrix WireGuardMesh).
# hm-prints: changed
set -eu
umask 077
mkdir -p /etc/wireguard
chmod 0700 /etc/wireguard
work=$(mktemp -d /etc/wireguard/.hm-${iface}.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/${iface}.conf" <<'${WG_CONF_HEREDOC}'
${config}${WG_CONF_HEREDOC}
# Only the interface's own lines (before the first peer) need a restart when they change.
own() { sed -n '/^\\[Peer\\]/q;/^\\(Address\\|ListenPort\\|MTU\\) =/p' "$1" 2>/dev/null || true; }
changed=0
restart=0
if ! cmp -s "$work/${iface}.conf" ${conf}; then
  [ "$(own "$work/${iface}.conf")" = "$(own ${conf})" ] || restart=1
  chown root:root "$work/${iface}.conf"
  chmod 0600 "$work/${iface}.conf"
  mv -f "$work/${iface}.conf" ${conf}
  changed=1
fi
# dockerd restores the swarm at boot on the mesh address: start it after wg0 has that address
# (inferred: the listener on <mesh address>:2377 cannot bind an address the host does not have yet).
dropin=/etc/systemd/system/docker.service.d/20-hardened-matrix-wg0.conf
printf '[Unit]\nWants=wg-quick@${iface}.service\nAfter=wg-quick@${iface}.service\n' >"$work/dropin"
if ! cmp -s "$work/dropin" "$dropin"; then
  mkdir -p "$(dirname "$dropin")"
  chmod 0644 "$work/dropin"
  mv -f "$work/dropin" "$dropin"
  systemctl daemon-reload
fi
systemctl enable wg-quick@${iface}.service >/dev/null 2>&1
if ! systemctl is-active --quiet wg-quick@${iface}.service; then
  systemctl start wg-quick@${iface}.service
elif [ "$restart" = 1 ]; then
  systemctl restart wg-quick@${iface}.service
elif [ "$changed" = 1 ]; then
  wg-quick strip ${conf} >"$work/stripped"
  wg syncconf ${iface} "$work/stripped"
  # syncconf changes peers, not routes: one /32 route per peer, none for a removed peer.
  allowed=" $(wg show ${iface} allowed-ips | cut -f2 | tr '\\n' ' ')"
  for a in $allowed; do [ "$a" = "(none)" ] || ip route replace "$a" dev ${iface}; done
  for r in $(ip -4 route show dev ${iface} | cut -d' ' -f1); do
    case $allowed in *" $r "*|*" $r/32 "*) ;; *) ip route del "$r" dev ${iface} ;; esac
  done
fi
ip link show ${iface} >/dev/null
echo "changed=$changed"
`;
}

import assert from "node:assert/strict";
import { BlockList, isIPv4 } from "node:net";
import { test } from "node:test";
import { mintTurnCredentials } from "../components/render/turnCredentials";
import {
  PUBLIC_DENIED_PEER_RANGES,
  cidrToCoturnRange,
  renderTurnserverConf,
  turnUris,
  type TurnServerConfig,
} from "../components/render/turnserver";

const base: TurnServerConfig = {
  realm: "turn.example.org",
  sharedSecret: "0123456789abcdef0123456789abcdef",
  externalIp: "203.0.113.7",
  listeningPort: 3478,
  tlsListeningPort: 5349,
  minPort: 49160,
  maxPort: 49200,
  deniedPeerRanges: ["10.20.0.0/16", "172.30.0.0/24"],
  userQuota: 12,
  totalQuota: 1200,
};

/** name -> values, in file order; flags get "" */
function parseConf(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-z0-9-]+)(?:=(\S+))?$/.exec(line);
    assert.ok(m, `line is neither "name" nor "name=value" without spaces: ${JSON.stringify(line)}`);
    out.set(m[1], [...(out.get(m[1]) ?? []), m[2] ?? ""]);
  }
  return out;
}

function one(conf: Map<string, string[]>, name: string): string {
  const v = conf.get(name);
  assert.ok(v, `missing ${name}`);
  assert.equal(v.length, 1, `${name} appears ${v.length} times`);
  return v[0];
}

// Long option names of turnserver 4.6.1 (Debian) and 4.7.0 (the pinned image) that this renderer may use;
// coturn only warns ("Bad configuration format") on an unknown line and carries on without it.
const KNOWN_OPTIONS = new Set([
  "listening-ip", "listening-port", "tls-listening-port", "no-tls", "no-dtls", "cert", "pkey", "external-ip",
  "min-port", "max-port", "use-auth-secret", "static-auth-secret", "realm", "fingerprint", "stale-nonce",
  "no-tcp-relay", "no-multicast-peers", "user-quota", "total-quota", "no-rfc5780",
  "response-origin-only-with-rfc5780", "no-software-attribute", "no-cli", "log-file", "pidfile",
  "denied-peer-ip", "allowed-peer-ip",
]);

// FACTS.md, coTURN section, verbatim.
const FACTS_DENIED = [
  "0.0.0.0/8", "10/8", "100.64/10", "127/8", "169.254/16", "172.16/12", "192.0.0/24", "192.0.2/24",
  "192.88.99/24", "192.168/16", "198.18/15", "198.51.100/24", "203.0.113/24", "240/4", "::1", "64:ff9b::/96",
  "::ffff:0:0/96", "100::/64", "2001::/23", "2002::/16", "fc00::/7", "fe80::/10",
];

function expandShortV4(cidr: string): string {
  const [a, p] = cidr.split("/");
  if (a.includes(":") || p === undefined) return cidr;
  const parts = a.split(".");
  while (parts.length < 4) parts.push("0");
  return `${parts.join(".")}/${p}`;
}

test("PUBLIC_DENIED_PEER_RANGES is exactly the FACTS.md list, and frozen", () => {
  assert.deepEqual([...PUBLIC_DENIED_PEER_RANGES], FACTS_DENIED.map(expandShortV4));
  assert.ok(Object.isFrozen(PUBLIC_DENIED_PEER_RANGES));
});

test("cidrToCoturnRange: coturn's first-last form, checked against node's BlockList", () => {
  assert.equal(cidrToCoturnRange("10.0.0.0/8"), "10.0.0.0-10.255.255.255");
  assert.equal(cidrToCoturnRange("100.64.0.0/10"), "100.64.0.0-100.127.255.255");
  assert.equal(cidrToCoturnRange("172.16.0.0/12"), "172.16.0.0-172.31.255.255");
  assert.equal(cidrToCoturnRange("198.18.0.0/15"), "198.18.0.0-198.19.255.255");
  assert.equal(cidrToCoturnRange("240.0.0.0/4"), "240.0.0.0-255.255.255.255");
  assert.equal(cidrToCoturnRange("0.0.0.0/0"), "0.0.0.0-255.255.255.255");
  assert.equal(cidrToCoturnRange("203.0.113.7/32"), "203.0.113.7");
  assert.equal(cidrToCoturnRange("203.0.113.7"), "203.0.113.7");
  assert.equal(cidrToCoturnRange("::1"), "::1");
  assert.equal(cidrToCoturnRange("64:ff9b::/96"), "64:ff9b::-64:ff9b::ffff:ffff");
  assert.equal(cidrToCoturnRange("::ffff:0:0/96"), "::ffff:0:0-::ffff:ffff:ffff");
  assert.equal(cidrToCoturnRange("::ffff:10.0.0.0/104"), "::ffff:a00:0-::ffff:aff:ffff");
  assert.equal(cidrToCoturnRange("2001::/23"), "2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff");
  assert.equal(cidrToCoturnRange("fc00::/7"), "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  assert.equal(cidrToCoturnRange("FE80::/10"), "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  assert.equal(cidrToCoturnRange("2001:db8:0:0:1:0:0:0/80"), "2001:db8:0:0:1::-2001:db8::1:ffff:ffff:ffff");

  // Independent oracle: each end is inside the subnet, its outer neighbour is not.
  const neighbour = (ip: string, delta: 1 | -1): string | undefined => {
    if (isIPv4(ip)) {
      const n = ip.split(".").reduce((a, p) => a * 256 + Number(p), 0) + delta;
      if (n < 0 || n > 0xffffffff) return undefined;
      return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
    }
    const groups = expandV6(ip);
    let carry: number = delta;
    for (let i = 7; i >= 0 && carry !== 0; i--) {
      const v = groups[i] + carry;
      groups[i] = (v + 0x10000) % 0x10000;
      carry = v > 0xffff ? 1 : v < 0 ? -1 : 0;
    }
    return carry === 0 ? groups.map((g) => g.toString(16)).join(":") : undefined;
  };
  for (const cidr of [...PUBLIC_DENIED_PEER_RANGES, "10.20.0.0/16", "2a01:4f8::/29"]) {
    const list = new BlockList();
    const [a, p] = cidr.split("/");
    const family = isIPv4(a) ? "ipv4" : "ipv6";
    if (p === undefined) list.addAddress(a, family);
    else list.addSubnet(a, Number(p), family);
    const range = cidrToCoturnRange(cidr);
    const [first, last = first] = range.split("-");
    assert.ok(list.check(first, family) && list.check(last, family), `${cidr}: ${range} ends inside`);
    for (const [end, d] of [[first, -1], [last, 1]] as const) {
      const out = neighbour(end, d);
      if (out !== undefined) assert.ok(!list.check(out, family), `${cidr}: ${out} must be outside`);
    }
  }
});

function expandV6(text: string): number[] {
  const [h, t] = text.split("::");
  const hg = h ? h.split(":") : [];
  const tg = t ? t.split(":") : [];
  return [...hg, ...Array<string>(8 - hg.length - tg.length).fill("0"), ...tg].map((g) => parseInt(g, 16));
}

test("cidrToCoturnRange refuses malformed input, set host bits, and an all-zero end (coturn reads it as 'any')", () => {
  for (const bad of ["10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "10.1.2.3/8", "fc00::1/7", "::/128", "0.0.0.0", "0.0.0.0/32", "x", "", "10.0.0.0/8/8", "fe80::1%eth0/128", "10.0.0.0/-1", "::1/129"]) {
    assert.throws(() => cidrToCoturnRange(bad), /invalid CIDR/, bad);
  }
});

test("renders every required option once, no CIDR anywhere, only options coturn 4.6/4.7 knows", () => {
  const text = renderTurnserverConf(base);
  const conf = parseConf(text);
  for (const name of conf.keys()) assert.ok(KNOWN_OPTIONS.has(name), `unknown option ${name}`);
  for (const flag of ["use-auth-secret", "fingerprint", "no-tcp-relay", "no-multicast-peers", "no-cli", "no-software-attribute", "no-rfc5780", "no-tls", "no-dtls"]) {
    assert.equal(one(conf, flag), "", flag);
  }
  assert.equal(one(conf, "static-auth-secret"), base.sharedSecret);
  assert.equal(one(conf, "realm"), "turn.example.org");
  assert.equal(one(conf, "external-ip"), "203.0.113.7");
  assert.equal(one(conf, "listening-port"), "3478");
  assert.equal(one(conf, "min-port"), "49160");
  assert.equal(one(conf, "max-port"), "49200");
  assert.equal(one(conf, "user-quota"), "12");
  assert.equal(one(conf, "total-quota"), "1200");
  assert.equal(one(conf, "log-file"), "stdout");
  assert.equal(one(conf, "pidfile"), "/var/tmp/turnserver.pid");
  assert.equal(one(conf, "stale-nonce"), "600");
  assert.equal(conf.get("listening-ip"), undefined, "binds all interfaces unless told");
  assert.equal(conf.get("tls-listening-port"), undefined);
  assert.equal(conf.get("cert"), undefined);
  for (const v of [...(conf.get("denied-peer-ip") ?? []), ...(conf.get("allowed-peer-ip") ?? [])]) {
    assert.ok(!v.includes("/"), `coturn ignores CIDR peer ranges: ${v}`);
  }
  assert.deepEqual(conf.get("allowed-peer-ip"), ["203.0.113.7"]);
  const expected = [...PUBLIC_DENIED_PEER_RANGES, ...base.deniedPeerRanges].map(cidrToCoturnRange);
  assert.deepEqual(conf.get("denied-peer-ip"), expected);
  assert.ok(expected.includes("10.20.0.0-10.20.255.255") && expected.includes("172.30.0.0-172.30.0.255"));
});

test("TLS: cert, pkey and tls-listening-port instead of no-tls/no-dtls; listening-ip and pidfile when given", () => {
  const conf = parseConf(
    renderTurnserverConf({ ...base, listeningIp: "127.0.0.1", pidFile: "/tmp/t.pid", tls: { certFile: "/run/secrets/turn.crt", keyFile: "/run/secrets/turn.key" } }),
  );
  assert.equal(one(conf, "tls-listening-port"), "5349");
  assert.equal(one(conf, "cert"), "/run/secrets/turn.crt");
  assert.equal(one(conf, "pkey"), "/run/secrets/turn.key");
  assert.equal(one(conf, "listening-ip"), "127.0.0.1");
  assert.equal(one(conf, "pidfile"), "/tmp/t.pid");
  assert.equal(conf.get("no-tls"), undefined);
  assert.equal(conf.get("no-dtls"), undefined);
});

test("duplicate extra ranges are written once; the external IP is always the only allowed peer", () => {
  const conf = parseConf(renderTurnserverConf({ ...base, deniedPeerRanges: ["10.0.0.0/8", "10.0.0.0/8"], externalIp: "198.51.100.9" }));
  const denied = conf.get("denied-peer-ip") ?? [];
  assert.equal(denied.filter((r) => r === "10.0.0.0-10.255.255.255").length, 1);
  assert.equal(denied.length, PUBLIC_DENIED_PEER_RANGES.length);
  assert.deepEqual(conf.get("allowed-peer-ip"), ["198.51.100.9"]);
});

test("invalid input: one clear error each", () => {
  const cases: [Partial<TurnServerConfig>, RegExp][] = [
    [{ sharedSecret: "" }, /sharedSecret must not be empty/],
    [{ sharedSecret: "has space" }, /sharedSecret must be printable ASCII/],
    [{ sharedSecret: "two\nlines" }, /sharedSecret must be printable ASCII/],
    [{ sharedSecret: 'quo"te' }, /sharedSecret/],
    [{ sharedSecret: "=leading" }, /sharedSecret/],
    [{ sharedSecret: "x".repeat(257) }, /at most 256/],
    [{ realm: "" }, /realm/],
    [{ realm: "bad realm" }, /realm/],
    [{ externalIp: "" }, /externalIp must be an IPv4/],
    [{ externalIp: "1.2.3" }, /externalIp must be an IPv4/],
    [{ externalIp: "2001:db8::1" }, /externalIp must be an IPv4/],
    [{ externalIp: "0.0.0.0" }, /externalIp must be a specific address/],
    [{ listeningIp: "localhost" }, /listeningIp/],
    [{ listeningPort: 0 }, /listeningPort must be an integer port/],
    [{ listeningPort: 65536 }, /listeningPort/],
    [{ tlsListeningPort: 3478.5 }, /tlsListeningPort/],
    [{ tlsListeningPort: 3478 }, /must differ/],
    [{ minPort: 49200, maxPort: 49200 }, /minPort \(49200\) must be below maxPort/],
    [{ minPort: 49300 }, /must be below maxPort/],
    [{ minPort: 80, maxPort: 2000 }, /relay range must start at 1024/],
    [{ minPort: 3000, maxPort: 4000 }, /listeningPort 3478 lies inside the relay range/],
    [{ userQuota: 0 }, /userQuota must be a positive integer/],
    [{ totalQuota: -1 }, /totalQuota/],
    [{ userQuota: 20, totalQuota: 10 }, /userQuota must not exceed totalQuota/],
    [{ deniedPeerRanges: ["10.1.2.3/8"] }, /deniedPeerRanges: invalid CIDR "10.1.2.3\/8": host bits/],
    [{ deniedPeerRanges: ["nope"] }, /deniedPeerRanges: invalid CIDR/],
    [{ tls: { certFile: "turn.crt", keyFile: "/k" } }, /tls.certFile must be an absolute path/],
    [{ tls: { certFile: "/c", keyFile: "/k y" } }, /tls.keyFile/],
    [{ pidFile: "relative.pid" }, /pidFile/],
  ];
  for (const [patch, message] of cases) {
    assert.throws(() => renderTurnserverConf({ ...base, ...patch }), message, JSON.stringify(patch));
  }
  assert.doesNotThrow(() => renderTurnserverConf(base));
});

test("turnUris: what Dendrite hands to clients", () => {
  assert.deepEqual(turnUris("turn.example.org", { listeningPort: 3478, tlsListeningPort: 5349, tls: true }), [
    "turn:turn.example.org:3478?transport=udp",
    "turn:turn.example.org:3478?transport=tcp",
    "turns:turn.example.org:5349?transport=tcp",
  ]);
  assert.deepEqual(turnUris("turn.example.org", { listeningPort: 3479, tlsListeningPort: 5349, tls: false }), [
    "turn:turn.example.org:3479?transport=udp",
    "turn:turn.example.org:3479?transport=tcp",
  ]);
  assert.throws(() => turnUris("bad host", { listeningPort: 3478, tlsListeningPort: 5349, tls: false }), /host/);
  assert.throws(() => turnUris("turn.example.org", { listeningPort: 0, tlsListeningPort: 5349, tls: false }), /listeningPort/);
});

test("mintTurnCredentials matches Dendrite's voip.go (vectors computed with `openssl dgst -sha1 -hmac`)", () => {
  assert.deepEqual(mintTurnCredentials("s3cret", "@alice:example.org", 86400, 1700000000), {
    username: "1700086400:@alice:example.org",
    password: "UD7jjEzq2I7HtUre54NaXWzW4Y0=",
    ttl: 86400,
  });
  // Go's Unix() drops the fraction of now+lifetime; int(duration.Seconds()) truncates the ttl.
  assert.deepEqual(mintTurnCredentials("n0t-the-default", "@bob:matrix.test", 3600.9, 1699999999.2), {
    username: "1700003600:@bob:matrix.test",
    password: "2RE9Hm6XwTuINnp95Jx8XOLxmUA=",
    ttl: 3600,
  });
  // The secret matters.
  assert.notEqual(mintTurnCredentials("s3cret!", "@alice:example.org", 86400, 1700000000).password, "UD7jjEzq2I7HtUre54NaXWzW4Y0=");
  assert.throws(() => mintTurnCredentials("", "@a:b", 60, 0), /sharedSecret/);
  assert.throws(() => mintTurnCredentials("s", "", 60, 0), /userId/);
  assert.throws(() => mintTurnCredentials("s", "@a:b", Number.NaN, 0), /lifetimeSeconds/);
  assert.throws(() => mintTurnCredentials("s", "@a:b", -5, 0), /lifetimeSeconds/);
  assert.throws(() => mintTurnCredentials("s", "@a:b", 60, Number.POSITIVE_INFINITY), /nowSeconds/);
});

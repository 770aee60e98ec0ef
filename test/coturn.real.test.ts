import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { mintTurnCredentials } from "../components/render/turnCredentials";
import { cidrToCoturnRange, PUBLIC_DENIED_PEER_RANGES, renderTurnserverConf, type TurnServerConfig } from "../components/render/turnserver";
import { findTool, skipReason } from "./support/realTool";
import { selfSignedCert } from "./support/selfSignedCert";

// The real Debian turnserver checks the rendered file: Dendrite-style credentials get an allocation and
// relay data; a wrong secret, an expired name and private peers are refused. Everything runs in a network
// namespace this test creates with only `lo` in it, so even a broken deny list cannot send a packet anywhere.

const needed = {
  turnserver: ["turnserver", "coturn"],
  uclient: ["turnutils_uclient", "coturn"],
  peer: ["turnutils_peer", "coturn"],
  stunclient: ["turnutils_stunclient", "coturn"],
  unshare: ["unshare", "util-linux"],
  nsenter: ["nsenter", "util-linux"],
  ip: ["ip", "iproute2"],
  timeout: ["timeout", "coreutils"],
} as const;
const tools = Object.fromEntries(Object.entries(needed).map(([k, [name, pkg]]) => [k, findTool(name, pkg)])) as Record<keyof typeof needed, string | undefined>;
const missing = (Object.keys(needed) as (keyof typeof needed)[]).find((k) => tools[k] === undefined);
const isRoot = process.getuid?.() === 0;
// Unprivileged users get a user namespace too (root inside it, nobody outside).
const unshareFlags = isRoot ? ["--net"] : ["--net", "--map-root-user"];
const nsenterFlags = isRoot ? ["--net"] : ["--net", "--user", "--preserve-credentials"];

function namespaceSkip(): string | undefined {
  if (missing) {
    const [name, pkg] = needed[missing];
    return skipReason(name, pkg);
  }
  try {
    execFileSync(tools.unshare!, [...unshareFlags, "--", "true"], { timeout: 5000, stdio: "ignore" });
    return undefined;
  } catch (e) {
    if (process.env.CI) throw new Error(`network namespaces are required in CI: ${(e as Error).message}`);
    return `cannot create a network namespace here (${(e as Error).message}); CI runs this test`;
  }
}
const skip = namespaceSkip();

const SECRET = randomBytes(24).toString("base64url");
const ports = { listening: 3478, tls: 5349, min: 49152, max: 49251, peer: 3480 };
const EXTRA_DENIED = "198.51.101.0/24"; // a stack range outside the public list: proves extras are merged

// ---- processes -----------------------------------------------------------------------------

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

function run(file: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL" });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, out }));
  });
}

// Runs inside the namespace with node itself: a TLS handshake, then one STUN Binding request over it.
const TLS_PROBE = `
const tls = require("node:tls"), crypto = require("node:crypto");
const out = {}; const tx = crypto.randomBytes(12); let buf = Buffer.alloc(0);
const done = (code) => { console.log(JSON.stringify(out)); process.exit(code); };
setTimeout(() => { out.error = "timeout"; done(2); }, Number(process.argv[2]));
const s = tls.connect({ host: "127.0.0.1", port: Number(process.argv[1]), rejectUnauthorized: false, minVersion: "TLSv1.2" }, () => {
  out.fingerprint256 = s.getPeerCertificate().fingerprint256; out.protocol = s.getProtocol();
  s.write(Buffer.concat([Buffer.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]), tx]));
});
s.on("data", (d) => { buf = Buffer.concat([buf, d]);
  if (buf.length >= 20 && buf.length >= 20 + buf.readUInt16BE(2)) { out.type = buf.readUInt16BE(0); out.txMatch = buf.subarray(8, 20).equals(tx); s.end(); done(0); } });
s.on("error", (e) => { out.error = e.code || e.message; done(1); });
`;

interface TlsProbe {
  error?: string;
  fingerprint256?: string;
  protocol?: string;
  type?: number;
  txMatch?: boolean;
}

interface Server {
  proc: ChildProcess;
  log: () => string;
}

describe("coturn: the rendered turnserver.conf under the real turnserver", { skip, concurrency: true }, () => {
  let dir = "";
  let holder: ChildProcess | undefined;
  let server: Server | undefined;
  let peer: ChildProcess | undefined;
  let certPem = "";
  const children: ChildProcess[] = [];

  // Children in the namespace run under coreutils' timeout: bounded even if this test process dies
  // (SIGTERM to it is forwarded to the child).
  const bounded = (seconds: number): string[] => [tools.timeout!, "-s", "KILL", String(seconds)];
  const inNs = (cmd: string[]): [string, string[]] => [tools.nsenter!, ["--target", String(holder!.pid), ...nsenterFlags, "--", ...cmd]];
  const runInNs = (cmd: string[], timeoutMs: number): Promise<Run> => run(...inNs([...bounded(Math.ceil(timeoutMs / 1000)), ...cmd]), timeoutMs + 3000);
  const uclient = (args: string[], user: { username: string; password: string }, timeoutMs = 30_000): Promise<Run> =>
    runInNs([tools.uclient!, ...args, "-u", user.username, "-w", user.password, "127.0.0.1"], timeoutMs);
  const serverLog = (): string => server?.log() ?? "";
  const linesFor = (username: string): string[] => serverLog().split("\n").filter((l) => l.includes(`user <${username}>`));
  const now = (): number => Date.now() / 1000;
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  async function tlsProbe(port: number, handshakeTimeoutMs = 5000): Promise<TlsProbe> {
    const r = await runInNs([process.execPath, "-e", TLS_PROBE, String(port), String(handshakeTimeoutMs)], handshakeTimeoutMs + 5000);
    return JSON.parse(r.out.trim().split("\n").pop() ?? "{}") as TlsProbe;
  }

  function baseConfig(name: string, p: { listening: number; tls: number; min: number; max: number }): TurnServerConfig {
    return {
      realm: "turn.test",
      sharedSecret: SECRET,
      externalIp: "127.0.0.1",
      listeningIp: "127.0.0.1",
      listeningPort: p.listening,
      tlsListeningPort: p.tls,
      minPort: p.min,
      maxPort: p.max,
      deniedPeerRanges: [EXTRA_DENIED],
      userQuota: 10,
      totalQuota: 100,
      pidFile: join(dir, `${name}.pid`),
    };
  }

  /** Starts turnserver on the rendered file (foreground: no -o) and waits until it answers STUN. */
  async function startServer(name: string, rendered: string, listeningPort: number): Promise<Server> {
    // Test-only lines: coturn refuses loopback peers before it reads allowed-peer-ip, and its SQLite
    // user database (unused with static-auth-secret) must not touch the host's /var/lib/turn.
    const file = join(dir, `${name}.conf`);
    writeFileSync(file, `${rendered}allow-loopback-peers\nuserdb=${join(dir, `${name}.db`)}\n`);
    let log = "";
    // -v logs every request with its user name and result: the evidence the tests read.
    const proc = spawn(...inNs([...bounded(240), tools.turnserver!, "-c", file, "-v"]), { stdio: ["ignore", "pipe", "pipe"] });
    children.push(proc);
    proc.stdout!.on("data", (d: Buffer) => (log += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    for (let i = 0; ; i++) {
      const probe = await runInNs([tools.stunclient!, "-p", String(listeningPort), "127.0.0.1"], 1500);
      if (probe.code === 0 && /reflexive addr: 127\.0\.0\.1:\d+/.test(probe.out)) break;
      if (proc.exitCode !== null || i > 20) throw new Error(`turnserver ${name} did not come up:\n${log}`);
      await sleep(200);
    }
    return { proc, log: () => log };
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "coturn-real-"));
    holder = spawn(tools.unshare!, [...unshareFlags, "--", "sleep", "300"], { stdio: "ignore", timeout: 300_000, killSignal: "SIGKILL" });
    children.push(holder);
    // Wait until the holder really sits in its own namespace, or nsenter would join the host's.
    const hostNet = readlinkSync("/proc/self/ns/net");
    for (let i = 0; ; i++) {
      let nsNet = hostNet;
      try {
        nsNet = readlinkSync(`/proc/${holder.pid}/ns/net`);
      } catch {
        // not there yet
      }
      if (nsNet !== hostNet) break;
      if (i > 100) throw new Error("the namespace holder never left the host network namespace");
      await sleep(20);
    }
    const up = await runInNs([tools.ip!, "link", "set", "lo", "up"], 5000);
    assert.equal(up.code, 0, up.out);
    const links = await runInNs([tools.ip!, "-o", "link"], 5000);
    assert.deepEqual(links.out.trim().split("\n").map((l) => l.split(":")[1].trim()), ["lo"], "the namespace must hold only lo");

    const cert = selfSignedCert("turn.test");
    certPem = cert.certPem;
    writeFileSync(join(dir, "turn.crt"), cert.certPem);
    writeFileSync(join(dir, "turn.key"), cert.keyPem, { mode: 0o600 });
    const config = { ...baseConfig("main", ports), tls: { certFile: join(dir, "turn.crt"), keyFile: join(dir, "turn.key") } };
    // The echo peer starts first: it is up long before the server answers STUN.
    peer = spawn(...inNs([...bounded(240), tools.peer!, "-L", "127.0.0.1", "-p", String(ports.peer)]), { stdio: "ignore" });
    children.push(peer);
    server = await startServer("main", renderTurnserverConf(config), ports.listening);
  });

  after(() => {
    for (const p of children.reverse()) {
      if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
    }
    if (process.env.COTURN_DEBUG_LOG) writeFileSync(process.env.COTURN_DEBUG_LOG, serverLog());
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("starts cleanly: every option understood, every denied range loaded as a range", () => {
    assert.doesNotMatch(serverLog(), /Bad configuration format|Wrong address format|CONFIG ERROR|Cannot find config file/);
    assert.match(serverLog(), /Version Coturn-4\./);
    const denied = [...PUBLIC_DENIED_PEER_RANGES, EXTRA_DENIED].map(cidrToCoturnRange);
    for (const range of denied) assert.ok(serverLog().includes(`Black listing: ${range}\n`), `not loaded: ${range}`);
    assert.equal((serverLog().match(/Black listing: /g) ?? []).length, denied.length);
    assert.match(serverLog(), /White listing: 127\.0\.0\.1\n/);
    assert.match(serverLog(), /pid file created: .*main\.pid/);
    assert.match(serverLog(), /--no-tcp-relay: TCP relay endpoints are not allowed/);
    assert.match(serverLog(), /RFC5780 disabled/);
  });

  test("Dendrite-minted credentials: allocation, and two clients relay data through the server", async () => {
    const user = mintTurnCredentials(SECRET, "@alice:turn.test", 3600, now());
    const r = await uclient(["-y", "-c", "-n", "3", "-m", "1", "-p", String(ports.listening)], user);
    assert.equal(r.code, 0, r.out);
    const m = /start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/.exec(r.out);
    assert.ok(m, r.out);
    assert.ok(Number(m[1]) > 0 && m[1] === m[2], `sent ${m[1]}, received ${m[2]}`);
    assert.ok(linesFor(user.username).some((l) => l.includes("ALLOCATE processed, success")), serverLog());
  });

  test("TLS on the tls-listening-port serves the configured certificate and answers STUN", async () => {
    const r = await tlsProbe(ports.tls);
    assert.equal(r.error, undefined, JSON.stringify(r));
    assert.equal(r.fingerprint256, new X509Certificate(certPem).fingerprint256, "the server must present our cert");
    assert.match(r.protocol ?? "", /^TLSv1\.[23]$/);
    assert.equal(r.type, 0x0101, "a STUN Binding success response over TLS");
    assert.equal(r.txMatch, true);
  });

  test("without tls: no TLS listener at all (no-tls, no-dtls), and the file still loads cleanly", async () => {
    const p = { listening: 13478, tls: 15349, min: 49400, max: 49420 };
    const plain = await startServer("plain", renderTurnserverConf(baseConfig("plain", p)), p.listening);
    try {
      assert.doesNotMatch(plain.log(), /Bad configuration format|Wrong address format|CONFIG ERROR/);
      assert.doesNotMatch(plain.log(), /TLS\/TCP listener opened|DTLS\/UDP listener opened/);
      assert.match(plain.log(), /IPv4\. TCP listener opened on : 127\.0\.0\.1:13478/);
      assert.equal((await tlsProbe(p.tls)).error, "ECONNREFUSED");
      // coturn does not answer a ClientHello there at all: no handshake completes.
      const onPlainPort = await tlsProbe(p.listening, 2000);
      assert.notEqual(onPlainPort.error, undefined, "a TLS handshake on the plain port must fail");
      assert.equal(onPlainPort.fingerprint256, undefined);
      // The same probe on the TLS server's plain port is the control: there TLS is accepted on 3478 too.
      assert.equal((await tlsProbe(ports.listening)).error, undefined);
    } finally {
      plain.proc.kill("SIGTERM");
    }
  });

  test("credentials minted from another secret are refused with 401", async () => {
    const user = mintTurnCredentials(`${SECRET}x`, "@mallory:turn.test", 3600, now());
    const r = await uclient(["-y", "-c", "-n", "1", "-m", "1", "-p", String(ports.listening)], user);
    assert.notEqual(r.code, 0, r.out);
    assert.equal(r.signal, null, "uclient must have finished, not timed out");
    assert.match(r.out, /Cannot complete Allocation/);
    const lines = linesFor(user.username);
    assert.ok(lines.some((l) => /error 401: Unauthorized/.test(l)), `no 401 logged for ${user.username}`);
    assert.ok(!lines.some((l) => l.includes("ALLOCATE processed, success")));
  });

  test("expired credentials (expiry in the past, correct HMAC) are refused with 401", async () => {
    const user = mintTurnCredentials(SECRET, "@late:turn.test", 3600, now() - 7200);
    assert.ok(Number(user.username.split(":")[0]) < now());
    const r = await uclient(["-y", "-c", "-n", "1", "-m", "1", "-p", String(ports.listening)], user);
    assert.notEqual(r.code, 0, r.out);
    assert.equal(r.signal, null, "uclient must have finished, not timed out");
    const lines = linesFor(user.username);
    assert.ok(lines.some((l) => /error 401: Unauthorized/.test(l)), `no 401 logged for ${user.username}`);
    assert.ok(!lines.some((l) => l.includes("ALLOCATE processed, success")));
  });

  test("control: the server's own address (allowed-peer-ip) is a reachable peer", async () => {
    const user = mintTurnCredentials(SECRET, "@peer-ok:turn.test", 3600, now());
    const r = await uclient(["-s", "-c", "-n", "3", "-m", "1", "-e", "127.0.0.1", "-r", String(ports.peer), "-p", String(ports.listening)], user);
    assert.equal(r.code, 0, r.out);
    const m = /start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/.exec(r.out);
    assert.ok(m && Number(m[1]) > 0 && m[1] === m[2], r.out);
    assert.ok(linesFor(user.username).some((l) => l.includes("CREATE_PERMISSION processed, success")));
  });

  const deniedPeers: [string, string][] = [
    ["10.0.0.1", "10.0.0.0-10.255.255.255"],
    ["100.64.0.1", "100.64.0.0-100.127.255.255"],
    ["127.0.0.2", "127.0.0.0-127.255.255.255"],
    ["198.51.101.7", cidrToCoturnRange(EXTRA_DENIED)],
  ];
  for (const [address, range] of deniedPeers) {
    test(`relaying to ${address} is refused by policy: CreatePermission 403, after a successful allocation`, async () => {
      const user = mintTurnCredentials(SECRET, `@deny-${address}:turn.test`, 3600, now());
      const r = await uclient(["-s", "-c", "-n", "1", "-m", "1", "-e", address, "-r", String(ports.peer), "-p", String(ports.listening)], user);
      assert.notEqual(r.code, 0, r.out);
      assert.equal(r.signal, null, "uclient must have finished, not timed out");
      assert.match(r.out, /create permission error 403 \(Forbidden IP\)/);
      const lines = linesFor(user.username);
      assert.ok(lines.some((l) => l.includes("ALLOCATE processed, success")), "auth passed, so the 403 is the peer policy");
      assert.ok(lines.some((l) => l.includes("CREATE_PERMISSION processed, error 403")), serverLog());
      assert.ok(serverLog().includes(`A peer IP ${address} denied in the range: ${range}`), `no denial logged for ${address}`);
    });
  }
});

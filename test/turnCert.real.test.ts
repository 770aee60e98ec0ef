import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { mintTurnCredentials } from "../components/render/turnCredentials";
import { renderTurnCertScript, renderTurnserverRun } from "../components/render/turnCert";
import { renderTurnserverConf } from "../components/render/turnserver";
import { acmeTurnTlsFiles } from "../components/services/coturn";
import { findTools, skipReason } from "./support/realTool";

// The real lego (Debian 4.9.1) runs the rendered turn-cert loop against the real pebble (Let's Encrypt's
// ACME test server) with DNS-01 answered by pebble-challtestsrv, and the real turnserver (Debian 4.6.1)
// runs under the rendered wrapper on the file the loop installs. All of it in a network namespace this
// test creates with only `lo`. What differs from production: lego's DNS provider (exec, writing the TXT
// record into challtestsrv, instead of cloudflare) and its propagation check (challtestsrv answers no
// SOA), the binary paths, and the timings (seconds instead of hours). Pebble issues five-year
// certificates, so "near expiry" is a renewal threshold above five years.

const needed = {
  lego: ["lego", "lego"],
  pebble: ["pebble", "pebble"],
  challtestsrv: ["pebble-challtestsrv", "pebble"],
  turnserver: ["turnserver", "coturn"],
  stunclient: ["turnutils_stunclient", "coturn"],
  uclient: ["turnutils_uclient", "coturn"],
  openssl: ["openssl", "openssl"],
  unshare: ["unshare", "util-linux"],
  nsenter: ["nsenter", "util-linux"],
  ip: ["ip", "iproute2"],
  timeout: ["timeout", "coreutils"],
} as const;
const found = findTools(needed);
const tools = found.tools as Record<keyof typeof needed, string>;
const isRoot = process.getuid?.() === 0;
const unshareFlags = isRoot ? ["--net"] : ["--net", "--map-root-user"];
const nsenterFlags = isRoot ? ["--net"] : ["--net", "--user", "--preserve-credentials"];

function namespaceSkip(): string | undefined {
  if (found.skip) return found.skip;
  try {
    execFileSync(tools.unshare, [...unshareFlags, "--", "true"], { timeout: 5000, stdio: "ignore" });
    return undefined;
  } catch (e) {
    if (process.env.CI) throw new Error(`network namespaces are required in CI: ${(e as Error).message}`);
    return `cannot create a network namespace here (${(e as Error).message}); CI runs this test`;
  }
}
const skip = namespaceSkip();
void skipReason;

const DOMAIN = "turn.example.org";
const SECRET = "turn-cert-real-test-secret";
const ports = { acme: 14000, acmeMgmt: 15000, dns: 8053, dnsMgmt: 8055, turn: 3478, tls: 5349, min: 49152, max: 49200 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Run {
  code: number | null;
  out: string;
}

// Runs inside the namespace with node itself: the certificate the TLS listener presents.
const TLS_PROBE = `
const tls = require("node:tls");
const s = tls.connect({ host: "127.0.0.1", port: Number(process.argv[1]), rejectUnauthorized: false }, () => {
  console.log(JSON.stringify({ fingerprint256: s.getPeerCertificate().fingerprint256, serial: s.getPeerCertificate().serialNumber })); s.end();
});
s.setTimeout(3000, () => { console.log(JSON.stringify({ error: "timeout" })); process.exit(1); });
s.on("error", (e) => { console.log(JSON.stringify({ error: e.code || e.message })); process.exit(1); });
`;

// lego's exec provider: `present|cleanup <fqdn> <value>`; the record goes into challtestsrv, which pebble asks.
const EXEC_PROVIDER = `
const [mode, fqdn, value] = process.argv.slice(2);
const path = mode === "present" ? "/set-txt" : mode === "cleanup" ? "/clear-txt" : undefined;
if (!path) process.exit(0);
fetch("http://127.0.0.1:${ports.dnsMgmt}" + path, { method: "POST", body: JSON.stringify({ host: fqdn, value }) })
  .then((r) => process.exit(r.ok ? 0 : 1), (e) => { console.error(e); process.exit(1); });
`;

/** The leaf certificate of a PEM bundle (the first CERTIFICATE block). */
function leaf(pem: string): X509Certificate {
  return new X509Certificate(pem);
}

describe("turn-cert: the real lego obtains and renews against pebble, the real turnserver reloads it", { skip, concurrency: false }, () => {
  let dir = "";
  let holder: ChildProcess | undefined;
  const children: ChildProcess[] = [];
  const logs = new Map<string, () => string>();
  let wrapper: ChildProcess | undefined;
  let livePem = "";
  let pidFile = "";

  const inNs = (cmd: string[]): [string, string[]] => [tools.nsenter, ["--target", String(holder!.pid), ...nsenterFlags, "--", ...cmd]];
  const bounded = (seconds: number): string[] => [tools.timeout, "-s", "KILL", String(seconds)];

  function runInNs(cmd: string[], timeoutMs: number): Promise<Run> {
    return new Promise((resolve, reject) => {
      const [file, args] = inNs([...bounded(Math.ceil(timeoutMs / 1000)), ...cmd]);
      const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs + 3000, killSignal: "SIGKILL" });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      child.on("error", reject);
      child.on("close", (code) => resolve({ code, out }));
    });
  }

  /** A long-running process in the namespace, in its own process group (its children go with it). */
  function startInNs(name: string, cmd: string[], env: Record<string, string> = {}): ChildProcess {
    const [file, args] = inNs([...bounded(300), ...cmd]);
    const proc = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], detached: true, env: { ...process.env, ...env } });
    let log = "";
    proc.stdout!.on("data", (d: Buffer) => (log += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (log += d.toString()));
    logs.set(name, () => log);
    children.push(proc);
    return proc;
  }

  function stopGroup(proc: ChildProcess | undefined): Promise<void> {
    if (!proc?.pid || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
    const done = new Promise<void>((r) => proc.once("close", () => r()));
    try {
      process.kill(-proc.pid, "SIGKILL");
    } catch {
      // not a group leader (the namespace holder): the process alone
      proc.kill("SIGKILL");
    }
    return done;
  }

  const log = (name: string): string => logs.get(name)?.() ?? "";

  async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs: number): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n--- wrapper ---\n${log("wrapper").slice(-3000)}\n--- lego ---\n${log("lego").slice(-3000)}${log("lego-near-expiry").slice(-3000)}`);
      await sleep(250);
    }
  }

  async function tlsProbe(): Promise<{ error?: string; fingerprint256?: string; serial?: string }> {
    const r = await runInNs([process.execPath, "-e", TLS_PROBE, String(ports.tls)], 8000);
    return JSON.parse(r.out.trim().split("\n").pop() || "{}");
  }

  async function stunAnswers(): Promise<boolean> {
    const r = await runInNs([tools.stunclient, "-p", String(ports.turn), "127.0.0.1"], 3000);
    return r.code === 0 && /reflexive addr: 127\.0\.0\.1:\d+/.test(r.out);
  }

  function legoScript(name: string, renewDays: number): string {
    const file = join(dir, `${name}.sh`);
    writeFileSync(
      file,
      renderTurnCertScript({
        domain: DOMAIN,
        email: "ops@example.org",
        server: `https://127.0.0.1:${ports.acme}/dir`,
        statePath: join(dir, "volume/lego"),
        livePem,
        heartbeatFile: join(dir, `${name}.heartbeat`),
        dns: { provider: "exec", flags: ["--dns.resolvers", `127.0.0.1:${ports.dns}`, "--dns.disable-cp"] },
        legoPath: tools.lego,
        renewDays,
        checkSeconds: 2,
        retrySeconds: 2,
      }),
    );
    return file;
  }

  const legoEnv = (): Record<string, string> => ({ LEGO_CA_CERTIFICATES: join(dir, "ca.pem"), EXEC_PATH: join(dir, "exec-provider.sh"), EXEC_PROPAGATION_TIMEOUT: "30", EXEC_POLLING_INTERVAL: "1" });
  const issued = (name: string): number => (log(name).match(/Server responded with a certificate/g) ?? []).length;
  const turnserverPid = (): number => Number(readFileSync(pidFile, "utf8").trim());

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "turn-cert-real-"));
    holder = spawn(tools.unshare, [...unshareFlags, "--", "sleep", "300"], { stdio: "ignore", timeout: 300_000, killSignal: "SIGKILL" });
    children.push(holder);
    const hostNet = readlinkSync("/proc/self/ns/net");
    await waitFor("the namespace", () => {
      try {
        return readlinkSync(`/proc/${holder!.pid}/ns/net`) !== hostNet ? true : undefined;
      } catch {
        return undefined;
      }
    }, 5000);
    assert.equal((await runInNs([tools.ip, "link", "set", "lo", "up"], 5000)).code, 0);

    // Pebble's own HTTPS certificate, from a CA lego is told to trust (LEGO_CA_CERTIFICATES).
    const ssl = (args: string[]): void => void execFileSync(tools.openssl, args, { cwd: dir, stdio: "pipe" });
    ssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=turn-cert test CA"]);
    ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "acme.key", "-out", "acme.csr", "-subj", "/CN=127.0.0.1"]);
    writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
    ssl(["x509", "-req", "-in", "acme.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "acme.pem", "-days", "2", "-extfile", "san.ext"]);
    writeFileSync(
      join(dir, "pebble.json"),
      JSON.stringify({
        pebble: {
          listenAddress: `127.0.0.1:${ports.acme}`,
          managementListenAddress: `127.0.0.1:${ports.acmeMgmt}`,
          certificate: join(dir, "acme.pem"),
          privateKey: join(dir, "acme.key"),
          httpPort: 5002,
          tlsPort: 5001,
          ocspResponderURL: "",
          externalAccountBindingRequired: false,
        },
      }),
    );
    writeFileSync(join(dir, "exec-provider.js"), EXEC_PROVIDER);
    writeFileSync(join(dir, "exec-provider.sh"), `#!/bin/sh\nexec '${process.execPath}' '${join(dir, "exec-provider.js")}' "$@"\n`, { mode: 0o755 });

    startInNs("challtestsrv", [tools.challtestsrv, "-dns01", `127.0.0.1:${ports.dns}`, "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", `127.0.0.1:${ports.dnsMgmt}`]);
    // No sleeps in validation, and no nonce rejections: pebble's defaults exist to test clients' retries.
    startInNs("pebble", [tools.pebble, "-config", join(dir, "pebble.json"), "-dnsserver", `127.0.0.1:${ports.dns}`], { PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" });
    await waitFor("pebble", () => (/ACME directory available/.test(log("pebble")) ? true : undefined), 15_000);

    // coturn as the coturn service runs it in acme mode: the rendered config names the live file as cert and key.
    livePem = join(dir, "volume/live/turn.pem");
    pidFile = join(dir, "turnserver.pid");
    const files = acmeTurnTlsFiles(livePem);
    const conf = renderTurnserverConf({
      realm: DOMAIN,
      sharedSecret: SECRET,
      externalIp: "127.0.0.1",
      listeningIp: "127.0.0.1",
      listeningPort: ports.turn,
      tlsListeningPort: ports.tls,
      minPort: ports.min,
      maxPort: ports.max,
      tls: files,
      deniedPeerRanges: [],
      userQuota: 10,
      totalQuota: 100,
      pidFile,
    });
    // Test-only: coturn's SQLite user database (unused with static-auth-secret) must not touch /var/lib/turn.
    // and coturn refuses loopback peers before it reads allowed-peer-ip (the relay test below uses 127.0.0.1).
    writeFileSync(join(dir, "turnserver.conf"), `${conf}allow-loopback-peers\nuserdb=${join(dir, "turn.db")}\n`);
    writeFileSync(join(dir, "run-turnserver.sh"), renderTurnserverRun({ configFile: join(dir, "turnserver.conf"), certFile: livePem, pollSeconds: 1, turnserverPath: tools.turnserver }));
  });

  after(async () => {
    for (const p of children.reverse()) await stopGroup(p);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let first: X509Certificate | undefined;
  let firstPid = 0;

  test("before any certificate: coturn serves plain TURN, and no TLS listener is open", async () => {
    wrapper = startInNs("wrapper", ["sh", join(dir, "run-turnserver.sh")]);
    await waitFor("plain STUN from turnserver", async () => ((await stunAnswers()) ? true : undefined), 15_000);
    assert.equal((await tlsProbe()).error, "ECONNREFUSED");
    assert.match(log("wrapper"), /no certificate yet/);
  });

  test("the turn-cert loop obtains a certificate (DNS-01) and coturn opens TLS with it", async () => {
    const legoProc = startInNs("lego", ["sh", legoScript("lego", 30)], legoEnv());
    await waitFor("the installed certificate", () => (existsSync(livePem) ? true : undefined), 60_000);
    first = leaf(readFileSync(livePem, "utf8"));
    assert.ok(first.checkHost(DOMAIN), first.subjectAltName);
    // Group-readable for coturn (same gid), nothing for others; the key is in this file.
    assert.equal(statSync(livePem).mode & 0o777, 0o640);
    const served = await waitFor("TLS with the new certificate", async () => {
      const p = await tlsProbe();
      return p.fingerprint256 === first!.fingerprint256 ? p : undefined;
    }, 20_000);
    assert.equal(served.serial?.toUpperCase(), first.serialNumber.toUpperCase());
    assert.match(log("wrapper"), /certificate appeared: restarting turnserver/);
    firstPid = turnserverPid();

    // 30 days before a five-year expiry: the loop checks every 2 s and leaves the certificate alone.
    await waitFor("two more checks", () => ((log("lego").match(/no renewal/g) ?? []).length >= 2 ? true : undefined), 30_000);
    assert.equal(issued("lego"), 1, log("lego"));
    assert.equal(leaf(readFileSync(livePem, "utf8")).fingerprint256, first.fingerprint256);
    await stopGroup(legoProc);
  });

  test("near expiry it renews, and the same turnserver serves the new certificate (SIGUSR2, no restart)", async () => {
    assert.ok(first, "needs the first certificate");
    // A renewal window longer than the certificate's life: lego renews on its first check.
    startInNs("lego-near-expiry", ["sh", legoScript("lego-near-expiry", 3650)], legoEnv());
    const renewed = await waitFor("the renewed certificate", () => {
      if (!existsSync(livePem)) return undefined;
      const c = leaf(readFileSync(livePem, "utf8"));
      return c.fingerprint256 !== first!.fingerprint256 ? c : undefined;
    }, 60_000);
    assert.notEqual(renewed.serialNumber, first.serialNumber);
    const served = await waitFor("TLS with the renewed certificate", async () => {
      const p = await tlsProbe();
      return p.fingerprint256 === renewed.fingerprint256 ? p : undefined;
    }, 20_000);
    assert.equal(served.serial?.toUpperCase(), renewed.serialNumber.toUpperCase());
    assert.equal(turnserverPid(), firstPid, "the same turnserver process: reloaded, not restarted");
    assert.match(log("wrapper"), new RegExp(`reloading it \\(SIGUSR2 to turnserver \\d+\\)`));
    assert.match(log("wrapper"), /Reloading TLS certificates and keys/);
    assert.equal((log("wrapper").match(/certificate appeared: restarting/g) ?? []).length, 1, "restarted only when the first certificate appeared");
    assert.equal(await stunAnswers(), true, "plain TURN still answers");
    assert.equal(wrapper?.exitCode, null, "the wrapper and its turnserver still run");
  });

  test("TURN over TLS with the renewed certificate: Dendrite-style credentials allocate and relay", async () => {
    const user = mintTurnCredentials(SECRET, "@alice:example.org", 3600, Date.now() / 1000);
    const r = await runInNs([tools.uclient, "-t", "-S", "-y", "-c", "-n", "2", "-m", "1", "-p", String(ports.tls), "-u", user.username, "-w", user.password, "127.0.0.1"], 30_000);
    assert.equal(r.code, 0, r.out);
    const m = /start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)/.exec(r.out);
    assert.ok(m && Number(m[1]) > 0 && m[1] === m[2], r.out);
  });

  test("stopping the task (SIGTERM to the wrapper, as Swarm does) stops turnserver and exits 0", async () => {
    assert.ok(wrapper?.pid);
    const pid = turnserverPid();
    const closed = new Promise<number | null>((r) => wrapper!.once("close", (code) => r(code)));
    // coreutils' timeout (the wrapper's parent here) passes SIGTERM on to it.
    wrapper.kill("SIGTERM");
    assert.equal(await closed, 0, log("wrapper").slice(-2000));
    assert.equal(existsSync(`/proc/${pid}`), false, "turnserver must be gone");
  });
});

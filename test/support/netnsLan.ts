import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as tls from "node:tls";
import { Agent, fetch as undiciFetch } from "undici";

/*
 * One network namespace standing for a small internet of servers, for tests that run several real
 * servers side by side (test/federation.real.test.ts):
 *   - the namespace `hmf<id>` has only its loopback interface, up, carrying every address the test asks
 *     for (each server binds its own address at its rendered ports); nothing is routed anywhere else,
 *     so no packet leaves it;
 *   - `ip netns exec` bind-mounts /etc/netns/<ns>/hosts and resolv.conf over /etc/hosts and
 *     /etc/resolv.conf (iproute2 ip-netns(8)): the servers' names resolve per namespace for glibc and Go
 *     programs; resolv.conf names a DNS server inside the namespace (or none that answers);
 *   - the test process stays in the host namespace and reaches the servers through a forwarder running
 *     inside the namespace on a unix socket (a filesystem socket crosses network namespaces): `fetch`
 *     (undici, the same library as Node's global fetch) and `connect` open their connections through it,
 *     resolving names from the same hosts table and verifying TLS against the roots given.
 * Every process started in the namespace is bounded by `timeout`; teardown() kills whatever still runs in
 * the namespace (`ip netns pids`: only processes this test started can be in it), deletes it and
 * /etc/netns/<ns>, and is synchronous and idempotent (safe from `after` and from process exit).
 */

const FORWARDER = `
const net = require("node:net");
const server = net.createServer((c) => {
  let buf = Buffer.alloc(0);
  const onData = (d) => {
    buf = Buffer.concat([buf, d]);
    const nl = buf.indexOf(10);
    if (nl < 0) { if (buf.length > 300) c.destroy(); return; }
    c.off("data", onData);
    c.pause();
    const [host, port] = buf.subarray(0, nl).toString().trim().split(" ");
    const rest = buf.subarray(nl + 1);
    const up = net.connect({ host, port: Number(port) }, () => {
      if (rest.length) up.write(rest);
      c.pipe(up); up.pipe(c); c.resume();
    });
    up.on("error", () => c.destroy());
    c.on("error", () => up.destroy());
    c.on("close", () => up.destroy());
    up.on("close", () => c.destroy());
  };
  c.on("data", onData);
  c.on("error", () => undefined);
});
server.listen(process.argv[1], () => console.log("forwarding"));
`;

export interface NetnsLanOptions {
  /** Addresses put on the namespace's loopback (IPv4 /32 or IPv6 /128). */
  addresses: string[];
  /** name -> address: /etc/netns/<ns>/hosts, and how fetch and connect resolve. */
  hosts: Record<string, string>;
  /** The namespace's DNS server (resolv.conf); none: 127.0.0.1, where nothing answers unless started. */
  nameserver?: string;
  /** Upper bound on every process's life, seconds. */
  lifetimeSeconds: number;
}

export class NetnsLan {
  readonly name = `hmf${randomBytes(3).toString("hex")}`;
  readonly etcDir = path.join("/etc/netns", this.name);
  readonly dir = mkdtempSync(path.join(tmpdir(), "hm-netns-"));
  readonly sock = path.join(this.dir, "forward.sock");
  /** Roots `fetch` and `connect` trust for HTTPS (add to it: pebble's root once pebble runs). */
  readonly ca: string[] = [];
  private forwarder?: ChildProcess;
  private tornDown = false;
  private readonly onExit = (): void => this.teardown();
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    try {
      this.teardown();
    } finally {
      process.kill(process.pid, signal);
    }
  };

  private constructor(readonly opts: NetnsLanOptions) {}

  static async create(opts: NetnsLanOptions): Promise<NetnsLan> {
    const lan = new NetnsLan(opts);
    process.on("exit", lan.onExit);
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, lan.onSignal);
    try {
      const ip = (args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 });
      ip(["netns", "add", lan.name]);
      ip(["-n", lan.name, "link", "set", "lo", "up"]);
      for (const a of opts.addresses) ip(["-n", lan.name, "addr", "add", `${a}/${a.includes(":") ? 128 : 32}`, "dev", "lo"]);
      mkdirSync(lan.etcDir, { recursive: true });
      writeFileSync(path.join(lan.etcDir, "hosts"), `127.0.0.1 localhost\n::1 localhost\n${Object.entries(opts.hosts).map(([n, a]) => `${a} ${n}`).join("\n")}\n`);
      writeFileSync(path.join(lan.etcDir, "resolv.conf"), `nameserver ${opts.nameserver ?? "127.0.0.1"}\noptions timeout:1 attempts:1\n`);
      lan.forwarder = lan.spawn(process.execPath, ["-e", FORWARDER, lan.sock]);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("the namespace's forwarder did not start within 10 s")), 10_000);
        lan.forwarder!.stdout!.once("data", () => (clearTimeout(t), resolve()));
        lan.forwarder!.once("exit", (c) => (clearTimeout(t), reject(new Error(`the namespace's forwarder exited ${c}`))));
      });
    } catch (e) {
      lan.teardown();
      throw e;
    }
    return lan;
  }

  /** The command prefix that runs a program inside the namespace, bounded in time. */
  get exec(): string[] {
    return ["ip", "netns", "exec", this.name, "timeout", "-s", "KILL", String(this.opts.lifetimeSeconds)];
  }

  /** Starts a program inside the namespace (stdout and stderr piped). */
  spawn(file: string, args: string[], env: NodeJS.ProcessEnv = process.env, cwd = this.dir): ChildProcess {
    const [cmd, ...pre] = this.exec;
    return spawn(cmd, [...pre, file, ...args], { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  }

  private resolve(host: string): string {
    const h = host.replace(/^\[|\]$/g, "");
    if (net.isIP(h)) return h;
    const a = this.opts.hosts[h];
    if (!a) throw new Error(`no address for ${host} in this namespace`);
    return a;
  }

  /** A plain TCP connection to host:port inside the namespace, through the forwarder. */
  connect(host: string, port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.sock, () => {
        s.write(`${this.resolve(host)} ${port}\n`);
        resolve(s);
      });
      s.once("error", reject);
    });
  }

  /** A TLS connection (SNI = servername), verified against `ca` and the name, inside the namespace. */
  async connectTls(host: string, port: number, servername: string, timeoutMs = 10_000): Promise<tls.TLSSocket> {
    const raw = await this.connect(host, port);
    return new Promise((resolve, reject) => {
      const s = tls.connect({ socket: raw, servername: net.isIP(servername) ? undefined : servername, host: net.isIP(servername) ? servername : undefined, ca: this.ca, ALPNProtocols: ["http/1.1"] }, () => resolve(s));
      s.setTimeout(timeoutMs, () => s.destroy(new Error(`TLS to ${host}:${port}: no handshake within ${timeoutMs} ms`)));
      s.once("error", reject);
    });
  }

  /** fetch (undici) whose every connection goes into the namespace; HTTPS verified against `ca`. */
  readonly fetch: typeof fetch = (() => {
    const agent = new Agent({
      connect: (o, cb) => {
        const port = Number(o.port) || (o.protocol === "https:" ? 443 : 80);
        const done = cb as (err: Error | null, socket: net.Socket | null) => void;
        const go = o.protocol === "https:" ? this.connectTls(o.hostname, port, o.servername || o.hostname) : this.connect(o.hostname, port);
        go.then((s) => {
          s.setTimeout(0);
          done(null, s);
        }, (e: Error) => done(e, null));
      },
    });
    return ((input: Parameters<typeof fetch>[0], init?: RequestInit) =>
      undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent })) as unknown as typeof fetch;
  })();

  teardown(): void {
    if (this.tornDown) return;
    this.tornDown = true;
    process.off("exit", this.onExit);
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(sig, this.onSignal);
    const quiet = { stdio: "ignore" as const, timeout: 10_000 };
    try {
      // Only what this test started can run in a namespace it created.
      for (let i = 0; i < 3; i++) {
        const pids = execFileSync("ip", ["netns", "pids", this.name], { encoding: "utf8", timeout: 10_000 }).split("\n").filter(Boolean).map(Number);
        if (pids.length === 0) break;
        for (const pid of pids) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            /* gone */
          }
        }
        execFileSync("sleep", ["0.2"]);
      }
    } catch {
      /* the namespace is not there */
    }
    try {
      execFileSync("ip", ["netns", "del", this.name], quiet);
    } catch {
      /* not there */
    }
    this.forwarder?.kill("SIGKILL");
    rmSync(this.etcDir, { recursive: true, force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

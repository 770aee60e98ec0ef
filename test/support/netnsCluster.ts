import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, copyFileSync } from "node:fs";
import * as path from "node:path";
import { findTool, skipReason } from "./realTool";

/*
 * A multi-node Docker Swarm on one machine, for real-daemon tests (FACTS.md "A multi-node swarm on one machine").
 *
 * Every run gets a fresh id; everything it creates is named after it, so a crashed earlier run cannot collide:
 *   - a "switch" network namespace `hmc<id>-sw` holding the private bridge `br0` (nothing in the host namespace,
 *     so no packet can reach the host or beyond, and the host's firewall/br_netfilter rules play no part);
 *   - per node a network namespace `hmc<id>-<n>` with a veth (the VPC interface, default `eth1`) carrying the node's
 *     VPC address; IPv6 is off so the capture holds only what the nodes send on purpose;
 *   - per node a holder process in that network namespace and in its own mount and UTS namespaces: hostname = node
 *     name, sysfs re-mounted for the namespace (keeping /sys/fs/cgroup), /etc and /var behind a private writable
 *     overlay (a script's writes there stay on the node), and a private tmpfs on /run, so the node has
 *     its own /run/wireguard (wireguard-go's control sockets: every node may call its interface `wg0`, exactly as the
 *     program renders it) and its own /run/docker and /run/containerd. Every command for the node (wg-quick, dockerd,
 *     scripts) enters these namespaces with nsenter;
 *   - per node one Debian dockerd (own data-root, exec-root, pidfile, socket, config file with its own
 *     `deprecated-key-path`, cgroup-parent `hmc<id>-<n>`, storage driver vfs) under /tmp/hmc<id>/<n>/.
 * Every long-lived process is wrapped in `timeout`, so even a killed test leaves nothing running for long.
 * teardown() is synchronous and idempotent (safe from an `after` hook and from process exit).
 */

export interface ClusterNodeSpec {
  /** Node name: the hostname inside the node, and the swarm node's hostname. */
  name: string;
  /** The node's VPC address with its prefix, e.g. "10.110.0.2/24". */
  vpcAddress: string;
}

export interface ClusterOptions {
  nodes: ClusterNodeSpec[];
  /** Name of the VPC interface inside each node (DigitalOcean droplets: eth1). */
  vpcInterface?: string;
  /** Upper bound on the life of every process started, in seconds. */
  lifetimeSeconds?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  stdin?: string | Buffer;
  env?: Record<string, string>;
  timeoutMs?: number;
}

export interface CapturedPacket {
  /** "ipv4", "ipv6", "arp" or the ethertype in hex. */
  ether: string;
  /** "udp", "tcp", "icmp", "igmp", "frag" (non-first IPv4 fragment) or the protocol number. */
  proto?: string;
  /** ICMP type/code, and for an ICMP error the protocol and ports of the packet it quotes. */
  icmp?: { type: number; code: number; quoted?: { proto: number; sport?: number; dport?: number } };
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  length: number;
}

const needed = {
  dockerd: ["dockerd", "docker.io"],
  docker: ["docker", "docker.io"],
  containerd: ["containerd", "containerd"],
  wireguardGo: ["wireguard-go", "wireguard-go"],
  wg: ["wg", "wireguard-tools"],
  wgQuick: ["wg-quick", "wireguard-tools"],
  tcpdump: ["tcpdump", "tcpdump"],
  busybox: ["busybox", "busybox-static"],
  ip: ["ip", "iproute2"],
  iptables: ["iptables", "iptables"],
  nsenter: ["nsenter", "util-linux"],
  unshare: ["unshare", "util-linux"],
  timeout: ["timeout", "coreutils"],
  tar: ["tar", "tar"],
} as const;
type ToolKey = keyof typeof needed;
export type Tools = Record<ToolKey, string>;

/** Debian packages the harness needs (for .ci/run). */
export const CLUSTER_PACKAGES = [...new Set(Object.values(needed).map(([, pkg]) => pkg))];

/** True when an ELF64 executable names a program interpreter (PT_INTERP): it is not static. */
export function hasInterpreter(elf: Buffer): boolean {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return true; // not ELF64: cannot be our static busybox
  const le = elf[5] === 1;
  const phoff = Number(le ? elf.readBigUInt64LE(0x20) : elf.readBigUInt64BE(0x20));
  const phentsize = le ? elf.readUInt16LE(0x36) : elf.readUInt16BE(0x36);
  const phnum = le ? elf.readUInt16LE(0x38) : elf.readUInt16BE(0x38);
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if ((le ? elf.readUInt32LE(o) : elf.readUInt32BE(o)) === 3) return true;
  }
  return false;
}

let toolCache: Partial<Record<ToolKey, string | undefined>> | undefined;
function lookTools(): Partial<Record<ToolKey, string | undefined>> {
  toolCache ??= Object.fromEntries((Object.keys(needed) as ToolKey[]).map((k) => [k, findTool(needed[k][0], needed[k][1])]));
  return toolCache;
}

/**
 * Why this machine cannot run the cluster (undefined: it can). In CI (CI=true) a missing tool or a
 * missing privilege throws instead, so nothing is silently skipped there.
 */
export function clusterSkipReason(): string | undefined {
  const t = lookTools();
  if (process.getuid?.() !== 0) {
    if (process.env.CI) throw new Error("the netns cluster tests need root in CI (network namespaces, dockerd)");
    return "needs root (network namespaces, one dockerd per node); CI runs this test";
  }
  const missing = (Object.keys(needed) as ToolKey[]).find((k) => t[k] === undefined);
  if (missing) return skipReason(needed[missing][0], needed[missing][1]);
  const bb = t.busybox!;
  if (hasInterpreter(readFileSync(bb))) {
    const msg = `${bb} is dynamically linked: install busybox-static for the test image`;
    if (process.env.CI) throw new Error(msg);
    return msg;
  }
  return undefined;
}

function tools(): Tools {
  const t = lookTools();
  for (const k of Object.keys(needed) as ToolKey[]) if (!t[k]) throw new Error(`missing ${needed[k][0]} (${needed[k][1]})`);
  return t as Tools;
}

const sleepSync = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs a program, never a shell; bounded in time; never rejects on a non-zero exit. */
export function run(file: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: opts.env ?? process.env,
      timeout: opts.timeoutMs ?? 60_000,
      killSignal: "SIGKILL",
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.stdin.on("error", () => undefined); // a program that does not read its stdin
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
    child.stdin.end(opts.stdin ?? "");
  });
}

function mustSync(file: string, args: string[], what: string, input?: string): string {
  const r = spawnSync(file, args, { encoding: "utf8", timeout: 30_000, input });
  if (r.status !== 0) throw new Error(`${what}: ${file} ${args.join(" ")} exited ${r.status ?? r.signal}: ${r.stderr}${r.error ?? ""}`);
  return r.stdout;
}

/** Every pid whose namespace of `kind` is `link` (e.g. "net:[4026532]"). */
function pidsInNamespace(kind: "net" | "mnt", link: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readlinkSync(`/proc/${p}/ns/${kind}`) === link) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** Running (a zombie our own process has not reaped yet counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

function killAll(pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Cgroup directories (any controller) named `name`, deepest first. */
function cgroupDirs(prefix: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > 4) return;
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      const full = path.join(dir, e);
      try {
        if (!statSync(full).isDirectory()) continue;
      } catch {
        continue;
      }
      if (e.startsWith(prefix)) {
        const sub = (d: string): void => {
          for (const s of readdirSync(d)) {
            const f = path.join(d, s);
            if (statSync(f).isDirectory()) sub(f);
          }
          found.push(d);
        };
        try {
          sub(full);
        } catch {
          // raced with removal
        }
      } else walk(full, depth + 1);
    }
  };
  walk("/sys/fs/cgroup", 0);
  return found;
}

function cgroupPids(dirs: string[]): number[] {
  const pids = new Set<number>();
  for (const d of dirs) {
    try {
      for (const l of readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n")) if (l.trim()) pids.add(Number(l));
    } catch {
      // not a process cgroup or gone
    }
  }
  return [...pids];
}

export class ClusterNode {
  /** Holder process: its namespaces are the node's. */
  holderPid = 0;
  netLink = "";
  mntLink = "";
  readonly dir: string;
  readonly sock: string;
  wgInterfaces: string[] = [];
  engineStarted = false;

  constructor(
    readonly cluster: NetnsCluster,
    readonly name: string,
    readonly index: number,
    readonly vpcAddress: string,
    readonly netns: string,
  ) {
    this.dir = path.join(cluster.dir, name);
    this.sock = path.join(this.dir, "docker.sock");
  }

  get vpcIp(): string {
    return this.vpcAddress.split("/")[0];
  }

  get dockerHost(): string {
    return `unix://${this.sock}`;
  }

  /** nsenter arguments that put a program into this node's network, mount and UTS namespaces. */
  enter(): string[] {
    return ["-t", String(this.holderPid), "--net", "--mount", "--uts", "--"];
  }

  /** The environment scripts and commands on this node get: Debian's paths first, this node's engine. */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      PATH: `${this.cluster.standInDir}:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin`,
      HOME: this.dir,
      WG_QUICK_USERSPACE_IMPLEMENTATION: this.cluster.wireguardGoWrapper,
      WG_HMC_LOG: path.join(this.dir, "wireguard-go.log"),
      DOCKER_HOST: this.dockerHost,
      DOCKER_CONFIG: path.join(this.dir, "docker-cli"),
      LANG: "C.UTF-8",
      ...extra,
    };
  }

  /** Runs argv inside the node (its network, mount and UTS namespaces) with the node's environment. */
  exec(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(this.cluster.tools.nsenter, [...this.enter(), ...argv], { ...opts, env: this.env(opts.env) });
  }

  /** Runs a shell script on the node as a file (its shebang decides the interpreter; /bin/sh without one). */
  runScript(script: string, opts: RunOptions & { name?: string } = {}): Promise<RunResult> {
    const file = path.join(this.dir, "scripts", `${opts.name ?? "script"}-${randomBytes(3).toString("hex")}.sh`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, script.startsWith("#!") ? script : `#!/bin/sh\n${script}`, { mode: 0o700 });
    return this.exec([file], { timeoutMs: 120_000, ...opts });
  }

  /** The docker CLI against this node's engine. */
  docker(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(this.cluster.tools.docker, args, { timeoutMs: 60_000, ...opts, env: this.env(opts.env) });
  }

  /** Like docker(), but throws with the engine's words on failure; returns stdout trimmed. */
  async mustDocker(args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.docker(args, opts);
    if (r.code !== 0) throw new Error(`${this.name}: docker ${args.join(" ")} exited ${r.code ?? r.signal}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /**
   * Brings up WireGuard from a wg-quick configuration text, unchanged, with the real wg-quick. This kernel has
   * no wireguard module, so wg-quick falls back to wireguard-go (wireguard-tools src/wg-quick/linux.bash add_if);
   * the wrapper only keeps wireguard-go in the foreground under `timeout`, so its life is bounded.
   */
  async wireguardUp(confText: string, iface = "wg0"): Promise<void> {
    if (!/^[a-zA-Z0-9_=+.-]{1,15}$/.test(iface)) throw new Error(`bad interface name ${iface}`);
    const wgDir = path.join(this.dir, "wg");
    mkdirSync(wgDir, { recursive: true, mode: 0o700 });
    const conf = path.join(wgDir, `${iface}.conf`); // wg-quick names the interface after the file
    writeFileSync(conf, confText, { mode: 0o600 });
    const r = await this.exec([this.cluster.tools.wgQuick, "up", conf], {
      timeoutMs: 30_000,
    });
    if (r.code !== 0) throw new Error(`${this.name}: wg-quick up ${iface} exited ${r.code ?? r.signal}:\n${r.stderr}`);
    this.wgInterfaces.push(iface);
  }

  /** `wg show <iface> dump` parsed: the latest handshake (unix seconds, 0 = never) per peer public key. */
  async handshakes(iface = "wg0"): Promise<Map<string, number>> {
    const r = await this.exec([this.cluster.tools.wg, "show", iface, "latest-handshakes"], { timeoutMs: 10_000 });
    if (r.code !== 0) throw new Error(`${this.name}: wg show ${iface}: ${r.stderr}`);
    return new Map(
      r.stdout
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => {
          const [k, t] = l.split(/\s+/);
          return [k, Number(t)];
        }),
    );
  }

  /** Starts this node's engine (returns once it answers `docker version`). */
  async startEngine(): Promise<void> {
    const t = this.cluster.tools;
    const life = this.cluster.lifetimeSeconds;
    for (const d of ["data", "x", "docker-cli"]) mkdirSync(path.join(this.dir, d), { recursive: true, mode: 0o700 });
    const config = path.join(this.dir, "daemon.json");
    writeFileSync(
      config,
      JSON.stringify(
        {
          // Each engine its own ID key: the ID is derived from it (moby/moby cmd/dockerd/config.go, v20.10:
          // the hidden "deprecated-key-path"); shared, all engines are one node to the swarm.
          "deprecated-key-path": path.join(this.dir, "key.json"),
          "storage-driver": "vfs",
          // Own cgroup parent: teardown finds every container process of this node by it.
          "cgroup-parent": `${this.cluster.prefix}-${this.name}`,
          "shutdown-timeout": 3,
          ip6tables: false,
          "log-level": "warn",
        },
        null,
        2,
      ),
    );
    const log = openSync(path.join(this.dir, "dockerd.log"), "a");
    const child = spawn(
      t.nsenter,
      [
        ...this.enter(),
        t.timeout,
        "--signal=TERM",
        "--kill-after=10",
        String(life),
        t.dockerd,
        "--config-file",
        config,
        "--data-root",
        path.join(this.dir, "data"),
        "--exec-root",
        path.join(this.dir, "x"),
        "--pidfile",
        path.join(this.dir, "docker.pid"),
        "-H",
        this.dockerHost,
      ],
      {
        detached: true,
        stdio: ["ignore", log, log],
        // Services use the images already on the node instead of asking a registry for a digest
        // (moby/moby daemon/cluster/services.go: "pin image by digest" unless this is "1").
        env: { ...this.env(), DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: "1" },
      },
    );
    child.unref();
    closeSync(log);
    this.engineStarted = true;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (existsSync(this.sock)) {
        const r = await this.docker(["version", "--format", "{{.Server.Version}}"], { timeoutMs: 10_000 });
        if (r.code === 0) return;
      }
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`${this.name}: dockerd did not come up:\n${this.engineLog().slice(-3000)}`);
      }
      await sleep(300);
    }
  }

  /** Stops this node's engine as a shutdown would (SIGTERM, then SIGKILL after 15 s); containers stop with it. */
  async stopEngine(): Promise<void> {
    const pidFile = path.join(this.dir, "docker.pid");
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    if (!(pid > 0) || !alive(pid)) return;
    killAll([pid], "SIGTERM");
    const until = Date.now() + 15_000;
    while (alive(pid) && Date.now() < until) await sleep(100);
    if (alive(pid)) killAll([pid], "SIGKILL");
    while (alive(pid)) await sleep(50);
  }

  engineLog(): string {
    try {
      return readFileSync(path.join(this.dir, "dockerd.log"), "utf8");
    } catch {
      return "";
    }
  }

  /**
   * Stops everything of this node: the engine (SIGTERM, then SIGKILL), containerd and shims, containers
   * (by cgroup parent), wireguard-go, the holder; then the network namespace. Synchronous and idempotent.
   */
  stop(errors: string[] = []): void {
    const pidFile = path.join(this.dir, "docker.pid");
    if (this.engineStarted && existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, "utf8").trim());
      if (pid > 0 && alive(pid)) {
        killAll([pid], "SIGTERM");
        const until = Date.now() + 12_000;
        while (alive(pid) && Date.now() < until) sleepSync(100);
      }
    }
    const cgPrefix = `${this.cluster.prefix}-${this.name}`;
    for (let round = 0; round < 20; round++) {
      const pids = new Set<number>([
        ...(this.netLink ? pidsInNamespace("net", this.netLink) : []),
        ...(this.mntLink ? pidsInNamespace("mnt", this.mntLink) : []),
        ...cgroupPids(cgroupDirs(cgPrefix)),
      ]);
      if (this.holderPid) pids.add(this.holderPid);
      for (const p of pids) if (!alive(p)) pids.delete(p);
      if (pids.size === 0) break;
      killAll([...pids], "SIGKILL");
      sleepSync(150);
      if (round === 19) errors.push(`${this.name}: processes left: ${[...pids].join(" ")}`);
    }
    for (const d of cgroupDirs(cgPrefix)) {
      try {
        rmSync(d, { recursive: false, force: true });
      } catch {
        const r = spawnSync("rmdir", [d]);
        if (r.status !== 0) errors.push(`${this.name}: cgroup ${d} not removed`);
      }
    }
    this.engineStarted = false;
    this.holderPid = 0;
  }
}

export class Capture {
  private done: Promise<void>;
  constructor(
    private readonly child: ReturnType<typeof spawn>,
    readonly file: string,
    private readonly stderr: () => string,
  ) {
    this.done = new Promise((resolve) => child.on("close", () => resolve()));
  }

  /** Stops tcpdump (SIGINT flushes the file) and returns every packet it saw. */
  async stop(): Promise<CapturedPacket[]> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGINT");
    await Promise.race([this.done, sleep(10_000)]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    if (!existsSync(this.file)) throw new Error(`tcpdump wrote no file: ${this.stderr()}`);
    return parsePcap(readFileSync(this.file));
  }
}

/** A classic pcap file (tcpdump -w, Ethernet link type) to one summary per packet. */
export function parsePcap(buf: Buffer): CapturedPacket[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) throw new Error("not a pcap file");
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  if (u32(20) !== 1) throw new Error(`pcap link type ${u32(20)} is not Ethernet`);
  const out: CapturedPacket[] = [];
  const ip4 = (o: number): string => `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`;
  for (let off = 24; off + 16 <= buf.length; ) {
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    const p = off + 16;
    off = p + incl;
    if (off > buf.length || incl < 14) break;
    let type = buf.readUInt16BE(p + 12);
    let l3 = p + 14;
    if (type === 0x8100 && incl >= 18) {
      type = buf.readUInt16BE(p + 16);
      l3 = p + 18;
    }
    if (type === 0x0806) {
      out.push({ ether: "arp", length: orig });
      continue;
    }
    if (type === 0x86dd) {
      out.push({ ether: "ipv6", proto: String(buf[l3 + 6]), length: orig });
      continue;
    }
    if (type !== 0x0800) {
      out.push({ ether: type.toString(16), length: orig });
      continue;
    }
    const ihl = (buf[l3] & 0x0f) * 4;
    const protoNum = buf[l3 + 9];
    const fragOffset = buf.readUInt16BE(l3 + 6) & 0x1fff;
    const pkt: CapturedPacket = { ether: "ipv4", src: ip4(l3 + 12), dst: ip4(l3 + 16), length: orig };
    const names: Record<number, string> = { 1: "icmp", 2: "igmp", 6: "tcp", 17: "udp" };
    pkt.proto = fragOffset !== 0 ? "frag" : (names[protoNum] ?? String(protoNum));
    const end = p + incl;
    if (protoNum === 1 && fragOffset === 0 && l3 + ihl + 2 <= end) {
      const t = l3 + ihl;
      pkt.icmp = { type: buf[t], code: buf[t + 1] };
      const inner = t + 8;
      if ([3, 11, 12].includes(buf[t]) && inner + 20 <= end) {
        const innerIhl = (buf[inner] & 0x0f) * 4;
        const q: { proto: number; sport?: number; dport?: number } = { proto: buf[inner + 9] };
        if (inner + innerIhl + 4 <= end) {
          q.sport = buf.readUInt16BE(inner + innerIhl);
          q.dport = buf.readUInt16BE(inner + innerIhl + 2);
        }
        pkt.icmp.quoted = q;
      }
    }
    if ((protoNum === 6 || protoNum === 17) && fragOffset === 0 && l3 + ihl + 4 <= p + incl) {
      pkt.sport = buf.readUInt16BE(l3 + ihl);
      pkt.dport = buf.readUInt16BE(l3 + ihl + 2);
    }
    out.push(pkt);
  }
  return out;
}

export class NetnsCluster {
  readonly id = randomBytes(3).toString("hex");
  readonly prefix = `hmc${this.id}`;
  readonly dir = path.join("/tmp", this.prefix);
  readonly switchNs = `${this.prefix}-sw`;
  readonly nodes: ClusterNode[] = [];
  readonly tools: Tools;
  readonly lifetimeSeconds: number;
  readonly vpcInterface: string;
  readonly wireguardGoWrapper: string;
  /** Holds `systemctl`, a stand-in for systemd's wg-quick@ units (see setUp). First on every node's PATH. */
  readonly standInDir: string;
  private tornDown = false;
  private readonly onExit = (): void => this.teardown();
  // A test runner that stops this process with a signal skips "exit": tear down, then die of that signal.
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    try {
      this.teardown();
    } finally {
      process.kill(process.pid, signal);
    }
  };

  private constructor(opts: ClusterOptions) {
    this.tools = tools();
    this.lifetimeSeconds = opts.lifetimeSeconds ?? 600;
    this.vpcInterface = opts.vpcInterface ?? "eth1";
    const names = new Set<string>();
    opts.nodes.forEach((n, i) => {
      if (!/^[a-z][a-z0-9-]{0,30}$/.test(n.name) || names.has(n.name)) throw new Error(`bad or duplicate node name ${n.name}`);
      if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(n.vpcAddress)) throw new Error(`${n.name}: vpcAddress must be a.b.c.d/len, got ${n.vpcAddress}`);
      names.add(n.name);
      this.nodes.push(new ClusterNode(this, n.name, i, n.vpcAddress, `${this.prefix}-${i}`));
    });
    this.wireguardGoWrapper = path.join(this.dir, "wireguard-go");
    this.standInDir = path.join(this.dir, "bin");
  }

  /** Creates the switch, the namespaces and the node holders (no engine, no WireGuard yet). */
  static async create(opts: ClusterOptions): Promise<NetnsCluster> {
    const c = new NetnsCluster(opts);
    process.on("exit", c.onExit);
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, c.onSignal);
    try {
      c.setUp();
      await Promise.all(c.nodes.map((n) => c.startHolder(n)));
    } catch (e) {
      c.teardown();
      throw e;
    }
    return c;
  }

  node(name: string): ClusterNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  private ipIn(ns: string, args: string[], what: string): void {
    mustSync(this.tools.ip, ["-n", ns, ...args], what);
  }

  private setUp(): void {
    const { ip } = this.tools;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // wg-quick calls this instead of wireguard-go when the kernel has no wireguard: wireguard-go in the
    // foreground under `timeout`, backgrounded here, and ready once its control socket exists.
    writeFileSync(
      this.wireguardGoWrapper,
      [
        "#!/bin/sh",
        "set -eu",
        `${this.tools.timeout} --signal=KILL ${this.lifetimeSeconds} ${this.tools.wireguardGo} -f "$1" </dev/null >>"\${WG_HMC_LOG:-/dev/null}" 2>&1 &`,
        "i=0",
        'while [ ! -S "/run/wireguard/$1.sock" ]; do i=$((i+1)); [ $i -lt 100 ] || { echo "wireguard-go $1 did not start" >&2; exit 1; }; sleep 0.1; done',
        "",
      ].join("\n"),
    );
    chmodSync(this.wireguardGoWrapper, 0o755);
    // No systemd in a namespace: `systemctl daemon-reload` (a no-op) and wg-quick@<if>.service only, doing what the packaged unit
    // does (wireguard-tools src/systemd/wg-quick@.service: Type=oneshot, RemainAfterExit=yes, ExecStart=
    // wg-quick up %i, ExecStop=wg-quick down %i, ExecReload=wg syncconf %i <(wg-quick strip %i),
    // Environment=WG_ENDPOINT_RESOLUTION_RETRIES=infinity). Anything else fails loudly.
    mkdirSync(this.standInDir, { recursive: true });
    writeFileSync(
      path.join(this.standInDir, "systemctl"),
      `#!/bin/bash
set -eu
export WG_ENDPOINT_RESOLUTION_RETRIES=infinity
quiet=0
args=()
for a in "$@"; do case $a in --quiet|-q) quiet=1 ;; --*) echo "systemctl stand-in: no option $a" >&2; exit 2 ;; *) args+=("$a") ;; esac; done
# Unit files are not read here: nothing to reload.
[ "\${args[*]}" = daemon-reload ] && exit 0
[ \${#args[@]} -eq 2 ] || { echo "systemctl stand-in: expected VERB UNIT, got: $*" >&2; exit 2; }
verb=\${args[0]}
unit=\${args[1]%.service}
# docker.service / docker.socket: stop only, as the packaged units stop dockerd (SIGTERM; its containers stop with it).
case $verb:$unit in
  stop:docker|stop:docker.socket)
    [ "$unit" = docker.socket ] && exit 0
    p=$(cat "$HOME/docker.pid" 2>/dev/null || true)
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      n=0; while kill -0 "$p" 2>/dev/null; do n=$((n+1)); [ $n -lt 300 ] || { echo "dockerd $p did not stop" >&2; exit 1; }; sleep 0.1; done
    fi
    exit 0 ;;
esac
case $unit in wg-quick@?*) i=\${unit#wg-quick@} ;; *) echo "systemctl stand-in: only wg-quick@ units and stopping docker, not $unit" >&2; exit 2 ;; esac
state=/run/hmc-units/$unit
mkdir -p /run/hmc-units
case $verb in
  enable) touch "$state.enabled" ;;
  disable) rm -f "$state.enabled" ;;
  is-enabled) [ -e "$state.enabled" ] || { [ $quiet = 1 ] || echo disabled; exit 1; }; [ $quiet = 1 ] || echo enabled ;;
  is-active) [ -e "$state.active" ] || { [ $quiet = 1 ] || echo inactive; exit 3; }; [ $quiet = 1 ] || echo active ;;
  start) [ -e "$state.active" ] || { wg-quick up "$i"; touch "$state.active"; } ;;
  stop) if [ -e "$state.active" ]; then rm -f "$state.active"; wg-quick down "$i"; fi ;;
  restart) if [ -e "$state.active" ]; then rm -f "$state.active"; wg-quick down "$i"; fi; wg-quick up "$i"; touch "$state.active" ;;
  reload) [ -e "$state.active" ] || { echo "$unit is not active" >&2; exit 1; }; wg syncconf "$i" <(wg-quick strip "$i") ;;
  *) echo "systemctl stand-in: no verb $verb" >&2; exit 2 ;;
esac
`,
      { mode: 0o755 },
    );
    mustSync(ip, ["netns", "add", this.switchNs], "switch namespace");
    this.ipIn(this.switchNs, ["link", "add", "br0", "type", "bridge"], "bridge");
    mustSync(ip, ["netns", "exec", this.switchNs, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], "ipv6 off (switch)");
    this.ipIn(this.switchNs, ["link", "set", "br0", "up"], "bridge up");
    for (const n of this.nodes) this.wireNode(n);
  }

  /** The node's network namespace, its veth on the switch and its VPC address. */
  private wireNode(n: ClusterNode): void {
    const { ip } = this.tools;
    mustSync(ip, ["netns", "add", n.netns], `${n.name} namespace`);
    mustSync(ip, ["netns", "exec", n.netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], "ipv6 off");
    const port = `p${this.id}${n.index}`;
    this.ipIn(this.switchNs, ["link", "add", port, "type", "veth", "peer", "name", this.vpcInterface, "netns", n.netns], `${n.name} veth`);
    this.ipIn(this.switchNs, ["link", "set", port, "master", "br0", "up"], `${n.name} port`);
    this.ipIn(n.netns, ["addr", "add", n.vpcAddress, "dev", this.vpcInterface], `${n.name} address`);
    this.ipIn(n.netns, ["link", "set", this.vpcInterface, "up"], `${n.name} up`);
    this.ipIn(n.netns, ["link", "set", "lo", "up"], `${n.name} lo`);
  }

  /**
   * The node's namespaces: its network namespace, and new mount and UTS namespaces with the hostname, a sysfs
   * of its own (`ip netns exec` does the same, but that hides /sys/fs/cgroup, which dockerd needs: rbind it aside,
   * mount sysfs, move it back) and a private /run.
   */
  private async startHolder(n: ClusterNode): Promise<void> {
    mkdirSync(n.dir, { recursive: true, mode: 0o700 });
    const ready = path.join(n.dir, "holder.ready");
    const aside = path.join(n.dir, "cgroup-aside");
    const rw = path.join(n.dir, "rw");
    mkdirSync(aside);
    mkdirSync(rw);
    const setup = [
      "set -eu",
      `hostname ${n.name}`,
      `mount --rbind /sys/fs/cgroup ${aside}`,
      "mount -t sysfs sysfs /sys",
      `mount --move ${aside} /sys/fs/cgroup`,
      "mount -t tmpfs -o mode=0755,size=64m tmpfs /run",
      "mkdir -p /run/lock /run/wireguard",
      // /etc and /var as the host's under a writable layer of the node's own: what a rendered script
      // writes there (a wg0.conf, a systemd drop-in) stays on the node and never reaches the host.
      `mount -t tmpfs -o mode=0700,size=64m tmpfs ${rw}`,
      ...["etc", "var"].flatMap((d) => [
        `mkdir -p ${rw}/${d}/upper ${rw}/${d}/work`,
        `mount -t overlay overlay -o lowerdir=/${d},upperdir=${rw}/${d}/upper,workdir=${rw}/${d}/work /${d}`,
      ]),
      `touch ${ready}`,
      `exec ${this.tools.timeout} --signal=KILL ${this.lifetimeSeconds + 30} sleep ${this.lifetimeSeconds + 20}`,
    ].join("\n");
    const log = openSync(path.join(n.dir, "holder.log"), "a");
    const child = spawn(
      this.tools.nsenter,
      [`--net=/run/netns/${n.netns}`, this.tools.unshare, "--mount", "--uts", "--propagation", "slave", "sh", "-c", setup],
      { detached: true, stdio: ["ignore", log, log] },
    );
    child.unref();
    closeSync(log);
    const deadline = Date.now() + 10_000;
    while (!existsSync(ready)) {
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`${n.name}: namespace holder failed: ${readFileSync(path.join(n.dir, "holder.log"), "utf8")}`);
      }
      await sleep(50);
    }
    // nsenter and unshare exec in place, `sh` execs `timeout`: the spawned pid is the holder.
    n.holderPid = child.pid!;
    n.netLink = readlinkSync(`/proc/${n.holderPid}/ns/net`);
    n.mntLink = readlinkSync(`/proc/${n.holderPid}/ns/mnt`);
  }

  /**
   * Replaces a node by a fresh one of the same name and VPC address, as a rebuilt droplet: everything of
   * the old one (engine, WireGuard, containers, namespaces, files) is stopped and removed first. Use it for
   * a node whose failed `swarm join` keeps retrying in the background.
   */
  async replaceNode(name: string, opts: { memberAllowed?: boolean } = {}): Promise<ClusterNode> {
    const old = this.node(name);
    // The engine deletes a droplet before creating its replacement only after the node's teardown
    // (delete-before-replace, SwarmCluster's teardown): a node that is still an active swarm member
    // here is the order the program no longer allows. `memberAllowed` models a crashed node.
    if (old.engineStarted && !opts.memberAllowed) {
      const r = await old.docker(["info", "--format", "{{.Swarm.LocalNodeState}}"], { timeoutMs: 10_000 });
      if (r.code === 0 && r.stdout.trim() === "active") throw new Error(`${name} is still an active swarm member: tear it down before replacing it`);
    }
    const errors: string[] = [];
    old.stop(errors);
    // The kernel frees a deleted namespace's veth asynchronously; deleting our end removes both ends now,
    // so the fresh node's veth of the same name cannot meet "File exists" on a loaded machine.
    const port = spawnSync(this.tools.ip, ["-n", this.switchNs, "link", "del", `p${this.id}${old.index}`], { encoding: "utf8" });
    if (port.status !== 0 && !/Cannot find device/.test(port.stderr)) errors.push(`veth del: ${port.stderr.trim()}`);
    const r = spawnSync(this.tools.ip, ["netns", "del", old.netns], { encoding: "utf8" });
    if (r.status !== 0) errors.push(`netns del ${old.netns}: ${r.stderr.trim()}`);
    rmSync(old.dir, { recursive: true, force: true, maxRetries: 3 });
    if (errors.length > 0) throw new Error(`replacing ${name}:\n${errors.join("\n")}`);
    const fresh = new ClusterNode(this, old.name, old.index, old.vpcAddress, old.netns);
    this.nodes[this.nodes.indexOf(old)] = fresh;
    this.wireNode(fresh);
    await this.startHolder(fresh);
    return fresh;
  }

  async startEngines(names: string[] = this.nodes.map((n) => n.name)): Promise<void> {
    await Promise.all(names.map((x) => this.node(x).startEngine()));
  }

  /**
   * A test image from busybox-static (no registry is reachable): `docker import` of a root filesystem with
   * busybox and its applet links, on every given node.
   */
  async importTestImage(tag = "hmc-busybox:1", names: string[] = this.nodes.map((n) => n.name)): Promise<string> {
    const root = path.join(this.dir, "image-root");
    const tarFile = path.join(this.dir, "image.tar");
    if (!existsSync(tarFile)) {
      mkdirSync(path.join(root, "bin"), { recursive: true });
      for (const d of ["tmp", "etc", "www", "proc", "sys", "dev"]) mkdirSync(path.join(root, d), { recursive: true });
      copyFileSync(this.tools.busybox, path.join(root, "bin/busybox"));
      chmodSync(path.join(root, "bin/busybox"), 0o755);
      const applets = execFileSync(this.tools.busybox, ["--list"], { encoding: "utf8" }).split("\n").filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== "busybox");
      for (const a of applets) if (!existsSync(path.join(root, "bin", a))) symlinkSync("busybox", path.join(root, "bin", a));
      writeFileSync(path.join(root, "etc/passwd"), "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
      writeFileSync(path.join(root, "etc/group"), "root:x:0:\nnogroup:x:65534:\n");
      mustSync(this.tools.tar, ["-C", root, "-cf", tarFile, "."], "image tarball");
    }
    const tarball = readFileSync(tarFile);
    await Promise.all(
      names.map((x) => this.node(x).mustDocker(["import", "--change", 'CMD ["/bin/sh"]', "-", tag], { stdin: tarball, timeoutMs: 60_000 })),
    );
    return tag;
  }

  /** A bounded tcpdump capture of everything on the private bridge (headers only). */
  async startCapture(opts: { maxPackets?: number; maxSeconds?: number } = {}): Promise<Capture> {
    const file = path.join(this.dir, `capture-${randomBytes(3).toString("hex")}.pcap`);
    let err = "";
    const child = spawn(
      this.tools.ip,
      [
        "netns",
        "exec",
        this.switchNs,
        this.tools.timeout,
        "--signal=INT",
        "--kill-after=5",
        String(opts.maxSeconds ?? 240),
        this.tools.tcpdump,
        "-i",
        "br0",
        "-n",
        "-U",
        "-s",
        "128",
        "-c",
        String(opts.maxPackets ?? 200_000),
        "-w",
        file,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!/listening on/.test(err)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`tcpdump did not start: ${err}`);
      await sleep(50);
    }
    return new Capture(child, file, () => err);
  }

  /** What is left of this run on the machine (empty after a clean teardown). */
  leftovers(): string[] {
    const left: string[] = [];
    const ns = spawnSync(this.tools.ip, ["netns", "list"], { encoding: "utf8" }).stdout;
    for (const l of ns.split("\n")) if (l.startsWith(this.prefix)) left.push(`netns ${l.split(" ")[0]}`);
    for (const p of readdirSync("/proc")) {
      if (!/^\d+$/.test(p)) continue;
      try {
        const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
        if (cmd.includes(this.prefix)) left.push(`process ${p}: ${cmd.replace(/\0/g, " ").slice(0, 120)}`);
      } catch {
        // gone
      }
    }
    for (const d of cgroupDirs(this.prefix)) left.push(`cgroup ${d}`);
    if (existsSync(this.dir)) left.push(`dir ${this.dir}`);
    return left;
  }

  /** Stops and removes everything this run created. Synchronous and idempotent; collects errors, then throws. */
  teardown(): void {
    if (this.tornDown) return;
    this.tornDown = true;
    process.removeListener("exit", this.onExit);
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.removeListener(sig, this.onSignal);
    const errors: string[] = [];
    try {
      // tcpdump and anything else left in the switch namespace
      const ino = statSync(`/run/netns/${this.switchNs}`).ino;
      killAll(pidsInNamespace("net", `net:[${ino}]`), "SIGKILL");
    } catch {
      // no switch namespace
    }
    for (const n of this.nodes) {
      try {
        n.stop(errors);
      } catch (e) {
        errors.push(`${n.name}: ${(e as Error).message}`);
      }
    }
    for (const ns of [...this.nodes.map((n) => n.netns), this.switchNs]) {
      const r = spawnSync(this.tools.ip, ["netns", "del", ns], { encoding: "utf8" });
      if (r.status !== 0 && !/No such file/.test(r.stderr)) errors.push(`netns del ${ns}: ${r.stderr.trim()}`);
    }
    try {
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
    } catch (e) {
      errors.push(`rm ${this.dir}: ${(e as Error).message}`);
    }
    if (errors.length > 0) throw new Error(`teardown of ${this.prefix}:\n${errors.join("\n")}`);
  }
}

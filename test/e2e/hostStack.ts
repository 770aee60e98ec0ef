import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { TurnClient } from "../../ops/turnClient";
import type { ScenarioTarget } from "./scenario";
import { planToDisk, type PlanOnDisk } from "../support/plan";

/**
 * The local stack's rendered configs run by the real programs straight on this machine, on loopback:
 * PostgreSQL 15 and coTURN from Debian, Dendrite v0.13.8 built from the Go module proxy (the pinned
 * image is v0.15.2: test/support/dendriteV013.ts lists what differs). No Traefik: the scenario's
 * Traefik-only steps are skipped here.
 *
 * Every change to a rendered file is an adaptation to the host (paths, addresses, ports) and is listed in
 * `adaptations`, printed by `npm run e2e`. Each program runs as the user the deployed service runs as
 * where that matters: Postgres refuses root; Dendrite and coTURN get the service's uid.
 */

const ROOT = join(__dirname, "../..");
const BUILD_DENDRITE = join(ROOT, "test/images/build-dendrite.sh");
/** The lead's prebuild, used until test/images/build-dendrite.sh (images helper) is on this branch. */
const PREBUILD = join(homedir(), ".cache/hardened-matrix/prebuild/dendrite-v0.13.8");

/**
 * Dendrite v0.13.8's bin directory: HM_DENDRITE_DIR, else what test/images/build-dendrite.sh builds (cached
 * by version: instant when warm; it prints the directory), else the prebuild.
 */
export function dendriteDir(): string {
  if (process.env.HM_DENDRITE_DIR) return process.env.HM_DENDRITE_DIR;
  if (existsSync(BUILD_DENDRITE)) return execFileSync(BUILD_DENDRITE, { encoding: "utf8", timeout: 1_800_000, stdio: ["ignore", "pipe", "inherit"] }).trim().split("\n").pop()!;
  return PREBUILD;
}

export interface HostStack {
  dir: string;
  clientBaseUrl: string;
  serverName: string;
  wellKnownBaseUrl: string;
  /** Absent when started with `turn: false`. */
  turn?: { host: string; port: number };
  dendriteConfig: string;
  createAccountCommand: (localpart: string) => string;
  adaptations: string[];
  register: (localpart: string, password: string) => Promise<void>;
  restartAll: () => Promise<void>;
  /** Stops one service (for the self-check's failure cases). */
  stopService: (name: "dendrite" | "coturn" | "postgres") => Promise<void>;
  stop: () => Promise<void>;
  logs: () => string;
}

const isRoot = process.getuid?.() === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function which(name: string): string {
  const pg = existsSync("/usr/lib/postgresql") ? readdirSync("/usr/lib/postgresql").sort().reverse().map((v) => `/usr/lib/postgresql/${v}/bin/${name}`) : [];
  for (const c of [`/usr/bin/${name}`, `/usr/sbin/${name}`, `/usr/local/bin/${name}`, ...pg]) if (existsSync(c)) return c;
  throw new Error(`${name} is not installed (Debian: postgresql-15, coturn, util-linux)`);
}

/** A TCP and UDP port free on 127.0.0.1 right now. */
async function freePort(udpToo = false): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.on("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const a = s.address();
        s.close(() => (typeof a === "object" && a ? resolve(a.port) : reject(new Error("no port"))));
      });
    });
    if (!udpToo) return port;
    const ok = await new Promise<boolean>((resolve) => {
      const u = createSocket("udp4");
      u.on("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port on 127.0.0.1");
}

/** Replaces exactly one occurrence, so an adaptation never silently misses (or hits twice). */
function replaceOnce(text: string, from: string | RegExp, to: string, what: string, log: string[]): string {
  const count = typeof from === "string" ? text.split(from).length - 1 : (text.match(new RegExp(from.source, `${from.flags.replace("g", "")}g`)) ?? []).length;
  if (count !== 1) throw new Error(`host adaptation "${what}": expected one match of ${String(from)}, found ${count}`);
  log.push(what);
  return text.replace(from, to);
}

export interface HostStackOptions {
  dendriteDir?: string;
  plan?: PlanOnDisk;
  log?: (line: string) => void;
  maxLifetimeSeconds?: number;
  /**
   * Run every program inside a network namespace: the command prefix (e.g. ["ip", "netns", "exec", NS]).
   * Postgres and Dendrite then listen on `bindAddress` at the ports the plan renders (5432, 8008).
   */
  netns?: string[];
  /** Address Postgres and Dendrite listen on (default 127.0.0.1, free ports). */
  bindAddress?: string;
  /** Run coTURN (default true). */
  turn?: boolean;
  /** Extra environment for Dendrite (e.g. SSL_CERT_FILE: the roots its federation client trusts). */
  dendriteEnv?: Record<string, string>;
}

export async function startHostStack(opts: HostStackOptions = {}): Promise<HostStack> {
  const say = opts.log ?? (() => undefined);
  const binDir = opts.dendriteDir ?? dendriteDir();
  const bins = { dendrite: join(binDir, "dendrite"), createAccount: join(binDir, "create-account") };
  for (const b of Object.values(bins)) if (!existsSync(b)) throw new Error(`${b} is missing: build Dendrite v0.13.8 first (test/images/build-dendrite.sh; until it lands, the lead's prebuild)`);
  const tools = { initdb: which("initdb"), postgres: which("postgres"), pgIsready: which("pg_isready"), turnserver: which("turnserver"), setpriv: which("setpriv"), timeout: which("timeout") };
  const pgBin = dirname(realpathSync(tools.postgres));

  if (!opts.plan) say("rendering the local stack (npm run plan -- --stack local)");
  const plan = opts.plan ?? planToDisk("local");
  const file = (suffix: string): string => {
    const hit = [...plan.files.keys()].find((k) => k.endsWith(suffix));
    if (!hit) throw new Error(`the local plan renders no ${suffix}`);
    return plan.files.get(hit)!;
  };
  const adaptations: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "hm-e2e-"));
  chmodSync(dir, 0o755); // mkdtemp is 0700: the service users must traverse it
  const procs = new Map<string, ChildProcess>();
  let logText = "";
  const ids = {
    postgres: isRoot ? Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim()) : -1,
    postgresGid: isRoot ? Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim()) : -1,
    dendrite: 10002, // the dendrite service's user (components/services/dendrite.ts)
    coturn: 65534, // coturn/coturn's nobody
  };
  const own = (p: string, uid: number, gid = uid) => {
    if (isRoot) chownSync(p, uid, gid);
  };
  const as = (uid: number, gid: number, file: string, args: string[]): [string, string[]] =>
    isRoot ? [tools.setpriv, [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", file, ...args]] : [file, args];
  const bounded = ([file, args]: [string, string[]]): [string, string[]] =>
    opts.maxLifetimeSeconds ? [tools.timeout, ["-s", "KILL", String(opts.maxLifetimeSeconds), file, ...args]] : [file, args];
  const inNs = ([file, args]: [string, string[]]): [string, string[]] => (opts.netns ? [opts.netns[0], [...opts.netns.slice(1), file, ...args]] : [file, args]);
  const bind = opts.bindAddress ?? "127.0.0.1";
  /** In a namespace each stack has an address of its own: the rendered port; on the host, a free one. */
  const portFor = async (rendered: number) => (opts.netns ? rendered : freePort());

  const start = (name: string, cmd: [string, string[]], env: NodeJS.ProcessEnv = {}, cwd = dir): ChildProcess => {
    const p = spawn(...inNs(bounded(cmd)), { cwd, env: { PATH: `${pgBin}:/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: "C.UTF-8", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const tag = (d: Buffer) => (logText += d.toString().replace(/^(?=.)/gm, `[${name}] `));
    p.stdout!.on("data", tag);
    p.stderr!.on("data", tag);
    procs.set(name, p);
    return p;
  };
  const runToEnd = (name: string, cmd: [string, string[]], env: NodeJS.ProcessEnv = {}, input?: string, timeoutMs = 60_000): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve, reject) => {
      const p = spawn(...inNs(cmd), { cwd: dir, env: { PATH: `${pgBin}:/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: "C.UTF-8", ...env }, stdio: ["pipe", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL" });
      let out = "";
      p.stdout.on("data", (d: Buffer) => (out += d.toString()));
      p.stderr.on("data", (d: Buffer) => (out += d.toString()));
      p.on("error", reject);
      p.on("close", (code) => resolve({ code, out }));
      // A program that exits without reading its stdin makes this write fail with EPIPE: its exit code
      // says what happened, so the write error is not one (unhandled, it failed the whole test file once).
      p.stdin.on("error", () => undefined);
      p.stdin.end(input ?? "");
    });
  const stopProc = async (name: string) => {
    const p = procs.get(name);
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once("close", r));
    p.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
    clearTimeout(timer);
    if (p.exitCode === null && p.signalCode === null) {
      p.kill("SIGKILL");
      await gone;
    }
  };
  async function until(what: string, ms: number, name: string, probe: () => Promise<boolean>): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      if (await probe().catch(() => false)) return;
      const p = procs.get(name);
      if (p && (p.exitCode !== null || p.signalCode !== null)) throw new Error(`${what}: ${name} exited (${p.exitCode ?? p.signalCode}):\n${logText.split("\n").slice(-40).join("\n")}`);
      if (Date.now() > end) throw new Error(`${what}: not within ${ms / 1000} s:\n${logText.split("\n").slice(-40).join("\n")}`);
      await sleep(300);
    }
  }

  const stopAll = async () => {
    for (const name of ["dendrite", "coturn", "postgres"]) await stopProc(name);
  };

  try {
    // ---- PostgreSQL 15 (Debian; the image pins 17) ----
    const pg = { port: await portFor(5432), socket: join(dir, "pgsock"), data: join(dir, "pgdata") };
    for (const d of [pg.socket, pg.data]) {
      mkdirSync(d, { mode: 0o700 });
      own(d, ids.postgres, ids.postgresGid);
    }
    const superPw = join(dir, "postgres-superuser-password");
    writeFileSync(superPw, file([...plan.files.keys()].find((k) => k.startsWith("postgres-superuser-secret/")) ?? "postgres-superuser-secret/"), { mode: 0o400 });
    own(superPw, ids.postgres, ids.postgresGid);
    const dendritePw = join(dir, "dendrite-db-password");
    writeFileSync(dendritePw, file("postgres-dendrite-secret/dendrite-db-password"), { mode: 0o400 });
    own(dendritePw, ids.postgres, ids.postgresGid);
    // The image's initdb: superuser "postgres" (POSTGRES_USER unset), its password from the secret, trust on the socket.
    const init = await runToEnd("initdb", as(ids.postgres, ids.postgresGid, tools.initdb, ["-D", pg.data, "-U", "postgres", `--pwfile=${superPw}`, "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"]));
    if (init.code !== 0) throw new Error(`initdb failed:\n${init.out}`);
    adaptations.push("postgres: Debian's PostgreSQL 15 (the pin is postgres:17.9-alpine), data and socket in a temp dir, on " + `${bind}:${pg.port}`);
    // The planned service's own server arguments (resources.json), after `postgres`.
    const service = plan.resources.find((r) => r.name === "postgres-service") as { inputs: { taskSpec: { containerSpec: { args: string[] } } } } | undefined;
    const serverArgs = service?.inputs.taskSpec.containerSpec.args.slice(1) ?? [];
    if (serverArgs.length === 0) throw new Error("the local plan has no postgres-service args");
    const pgArgs = ["-D", pg.data, ...serverArgs, "-c", `unix_socket_directories=${pg.socket}`, "-c", `port=${pg.port}`];
    const pgUp = () => runToEnd("pg_isready", [tools.pgIsready, ["-q", "-h", pg.socket, "-p", String(pg.port), "-U", "postgres", "-d", "postgres", "-t", "1"]], {}, undefined, 5000).then((r) => r.code === 0);
    // Phase 1, as the entrypoint does: a socket-only server runs the init scripts.
    start("postgres", as(ids.postgres, ids.postgresGid, tools.postgres, [...pgArgs, "-c", "listen_addresses="]));
    await until("postgres (init phase) accepting connections", 60_000, "postgres", pgUp);
    const initScript = join(dir, "10-dendrite.sh");
    writeFileSync(initScript, replaceOnce(file("postgres-init/10-dendrite.sh"), "pwfile='/run/secrets/dendrite-db-password'", `pwfile='${dendritePw}'`, "postgres init script: the password file's path", adaptations), { mode: 0o555 });
    const ran = await runToEnd("10-dendrite.sh", as(ids.postgres, ids.postgresGid, initScript, []), { POSTGRES_USER: "postgres", PGHOST: pg.socket, PGPORT: String(pg.port) });
    if (ran.code !== 0) throw new Error(`the rendered postgres init script failed:\n${ran.out}`);
    await stopProc("postgres");
    start("postgres", as(ids.postgres, ids.postgresGid, tools.postgres, [...pgArgs, "-c", `listen_addresses=${bind}`]));
    await until("postgres accepting connections", 60_000, "postgres", pgUp);
    say(`postgres 15 on ${bind}:${pg.port}`);

    // ---- coTURN (Debian) ----
    const withTurn = opts.turn ?? true;
    const turnPort = withTurn ? await freePort(true) : 0;
    // Without coTURN its config is still adapted (one code path) but nothing of it is listed as run.
    const turnLog: string[] = withTurn ? adaptations : [];
    // A relay range away from the kernel's ephemeral ports, random so parallel runs rarely meet.
    const relayMin = 20000 + Math.floor(Math.random() * 90) * 100;
    let turnConf = file("coturn-config/turnserver.conf");
    turnConf = replaceOnce(turnConf, /^listening-port=\d+$/m, `listening-port=${turnPort}\nlistening-ip=127.0.0.1\nrelay-ip=127.0.0.1`, `coturn: listens and relays on 127.0.0.1, port ${turnPort}`, turnLog);
    // coTURN refuses loopback peers before it reads the peer lists (--allow-loopback-peers, off by default);
    // on this host every peer is on loopback. The rendered lists still decide: 127.0.0.1 (external-ip) is
    // allowed, the rest of 127/8 denied, which the scenario checks.
    turnConf = replaceOnce(turnConf, /^no-multicast-peers$/m, "no-multicast-peers\nallow-loopback-peers", "coturn: allow-loopback-peers (every peer on this host is on loopback)", turnLog);
    turnConf = replaceOnce(turnConf, /^min-port=\d+$/m, `min-port=${relayMin}`, `coturn: relay ports ${relayMin}-${relayMin + 99}`, turnLog);
    turnConf = replaceOnce(turnConf, /^max-port=\d+$/m, `max-port=${relayMin + 99}`, "coturn: relay range end", turnLog);
    const turnRun = join(dir, "coturn");
    mkdirSync(turnRun);
    own(turnRun, ids.coturn);
    const turnPid = join(turnRun, "turnserver.pid");
    turnConf = replaceOnce(turnConf, /^pidfile=.*$/m, `pidfile=${turnPid}`, "coturn: pid file in the temp dir (the service's is on a tmpfs)", turnLog);
    const turnConfPath = join(dir, "turnserver.conf");
    writeFileSync(turnConfPath, turnConf, { mode: 0o440 });
    own(turnConfPath, 0, ids.coturn);
    const startTurn = async () => {
      start("coturn", as(ids.coturn, ids.coturn, tools.turnserver, ["-c", turnConfPath]));
      // Up when an unauthenticated Allocate gets its 401 challenge.
      await until("coturn answering on UDP", 30_000, "coturn", async () => {
        const probe = new TurnClient({ host: "127.0.0.1", port: turnPort }, { username: "probe", password: "probe" }, 1000);
        try {
          return (await probe.allocate()).errorCode === 401;
        } finally {
          probe.close();
        }
      });
    };
    if (withTurn) {
      await startTurn();
      say(`coturn on 127.0.0.1:${turnPort}/udp`);
    }

    // ---- Dendrite v0.13.8 ----
    const dendritePort = await portFor(8008);
    const state = join(dir, "dendrite");
    for (const d of ["", "media", "jetstream", "searchindex"]) {
      mkdirSync(join(state, d), { recursive: true });
      own(join(state, d), ids.dendrite);
    }
    const keyPath = join(dir, "matrix-signing-key.pem");
    writeFileSync(keyPath, file("dendrite-signing-key/matrix-signing-key.pem"), { mode: 0o400 });
    own(keyPath, ids.dendrite);
    let yaml = file("dendrite-config/dendrite.yaml");
    yaml = replaceOnce(yaml, '"/run/secrets/matrix-signing-key.pem"', `"${keyPath}"`, "dendrite: private_key path (the rendered signing key, not a new one)", adaptations);
    yaml = replaceOnce(yaml, /@postgres:5432\//, `@${bind}:${pg.port}/`, `dendrite: database host postgres:5432 -> ${bind}:${pg.port}`, adaptations);
    yaml = replaceOnce(yaml, '"/var/dendrite/jetstream"', `"${join(state, "jetstream")}"`, "dendrite: jetstream storage_path", adaptations);
    yaml = replaceOnce(yaml, '"/var/dendrite/media"', `"${join(state, "media")}"`, "dendrite: media base_path", adaptations);
    yaml = replaceOnce(yaml, '"/var/dendrite/searchindex"', `"${join(state, "searchindex")}"`, "dendrite: search index_path", adaptations);
    if (withTurn) yaml = replaceOnce(yaml, /"turn:[^":]+:\d+\?transport=udp"/, `"turn:127.0.0.1:${turnPort}?transport=udp"`, `dendrite: turn_uris udp -> 127.0.0.1:${turnPort}`, adaptations);
    if (withTurn) yaml = replaceOnce(yaml, /"turn:[^":]+:\d+\?transport=tcp"/, `"turn:127.0.0.1:${turnPort}?transport=tcp"`, `dendrite: turn_uris tcp -> 127.0.0.1:${turnPort}`, adaptations);
    const configPath = join(dir, "dendrite.yaml");
    writeFileSync(configPath, yaml, { mode: 0o440 });
    own(configPath, 0, ids.dendrite);
    const serverName = /^ {2}server_name: "([^"]+)"$/m.exec(yaml)?.[1];
    const wellKnownBaseUrl = /^ {2}well_known_client_name: "([^"]+)"$/m.exec(yaml)?.[1];
    if (!serverName || !wellKnownBaseUrl) throw new Error("the rendered dendrite.yaml has no server_name or well_known_client_name");
    const clientBaseUrl = `http://${bind}:${dendritePort}`;
    adaptations.push(`dendrite: -http-bind-address ${bind}:${dendritePort} (the service binds :8008 on its overlay)`);
    const startDendrite = async () => {
      start("dendrite", as(ids.dendrite, ids.dendrite, bins.dendrite, ["-config", configPath, "-http-bind-address", `${bind}:${dendritePort}`]), opts.dendriteEnv ?? {}, state);
      await until("dendrite answering /_matrix/client/versions", 180_000, "dendrite", async () => (await fetch(`${clientBaseUrl}/_matrix/client/versions`, { signal: AbortSignal.timeout(3000) })).ok);
    };
    await startDendrite();
    say(`dendrite v0.13.8 on ${clientBaseUrl}, server name ${serverName}`);

    return {
      dir,
      clientBaseUrl,
      serverName,
      wellKnownBaseUrl,
      turn: withTurn ? { host: "127.0.0.1", port: turnPort } : undefined,
      dendriteConfig: configPath,
      createAccountCommand: (localpart) => `${bins.createAccount} -config ${configPath} -url ${clientBaseUrl} -username ${localpart} -passwordstdin`,
      adaptations,
      register: async (localpart, password) => {
        // The same call ops/users.ts makes in the container: the password on stdin, never in argv.
        const r = await runToEnd("create-account", [bins.createAccount, ["-config", configPath, "-url", clientBaseUrl, "-username", localpart, "-passwordstdin"]], {}, `${password}\n`);
        if (r.code !== 0) throw new Error(`create-account ${localpart} failed: ${r.out.replace(/\(AccessToken: [^)]*\)/g, "(token withheld)").trim()}`);
      },
      restartAll: async () => {
        await stopAll();
        start("postgres", as(ids.postgres, ids.postgresGid, tools.postgres, [...pgArgs, "-c", `listen_addresses=${bind}`]));
        await until("postgres accepting connections after restart", 60_000, "postgres", pgUp);
        rmSync(turnPid, { force: true });
        if (withTurn) await startTurn();
        await startDendrite();
      },
      stopService: (name) => stopProc(name),
      stop: async () => {
        await stopAll();
        rmSync(dir, { recursive: true, force: true });
      },
      logs: () => logText,
    };
  } catch (e) {
    await stopAll();
    if (process.env.HM_E2E_KEEP_FAILED) say(`left ${dir} for inspection`);
    else rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * The scenario's target on the host stack: Dendrite straight (its admin path too), coTURN's relay to a
 * loopback peer (allowed there) and two denied peers; `restart` restarts every server.
 */
export function hostStackTarget(stack: HostStack, restart = true): ScenarioTarget {
  return {
    clientBaseUrl: stack.clientBaseUrl,
    serverName: stack.serverName,
    wellKnownBaseUrl: stack.wellKnownBaseUrl,
    register: stack.register,
    adminPath: { dendriteUrl: stack.clientBaseUrl },
    turnPeerHost: "127.0.0.1",
    turnDeniedPeers: ["10.0.0.1", "127.0.0.2"],
    ...(restart ? { restart: stack.restartAll } : {}),
  };
}

import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { postgresServerArgs, postgresTuning, renderPostgresInitScript, renderPostgresStartScript } from "../components/render/postgres";
import { findTools } from "./support/realTool";

// A real PostgreSQL (Debian's) runs the rendered init script the way the postgres image's entrypoint
// does: first a socket-only temporary server started with the service's own args, the superuser's
// database created, then /docker-entrypoint-initdb.d/*.sh executed as the postgres user with
// POSTGRES_USER, POSTGRES_DB and PGPASSWORD exported. Then the server restarts on 127.0.0.1 with
// SCRAM for TCP, and the tests log in as Dendrite would.

const isRoot = process.getuid?.() === 0;
const needed = {
  initdb: ["initdb", "postgresql"],
  postgres: ["postgres", "postgresql"],
  pgCtl: ["pg_ctl", "postgresql"],
  pgIsready: ["pg_isready", "postgresql"],
  timeout: ["timeout", "coreutils"],
  ...(isRoot ? { setpriv: ["setpriv", "util-linux"] } : {}),
} as const;
const { tools, skip } = findTools<keyof typeof needed | "setpriv">(needed);
// psql from the same major version as the server (findTool may return a symlink into that directory).
const pgBin = tools.postgres ? dirname(realpathSync(tools.postgres)) : "";

const SUPERUSER = "pgsuper"; // not "postgres": proves the script uses $POSTGRES_USER
const SUPER_PASSWORD = randomBytes(18).toString("base64url");
// Quotes, a backslash, a dollar, spaces and SQL comment characters: only psql's own quoting survives these.
const PASSWORD = `${randomBytes(24).toString("base64url")}'" \\$x;-- :pw`;
const DB = { database: "dendrite", role: "dendrite" };
const TUNING = postgresTuning(1024 ** 3);
const SERVER_ARGS = postgresServerArgs(TUNING);

interface Run {
  code: number | null;
  out: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL" });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, out }));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      s.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** "64MB" / "1GB" / "2s" / "2000ms" as numbers in one unit, so SHOW's canonical form compares with ours. */
function normalize(value: string): string {
  const m = /^(\d+(?:\.\d+)?)\s*(kB|MB|GB|TB|ms|s|min|h)$/.exec(value);
  if (!m) return value;
  const factor: Record<string, number> = { kB: 1, MB: 1024, GB: 1024 ** 2, TB: 1024 ** 3, ms: 1, s: 1000, min: 60_000, h: 3_600_000 };
  return String(Number(m[1]) * factor[m[2]]) + (/B$/.test(m[2]) ? "kB" : "ms");
}

describe("postgres: the rendered init script and settings on a real PostgreSQL", { skip, timeout: 180_000 }, () => {
  const started = Date.now();
  let dir = "";
  let dataDir = "";
  let port = 0;
  let serverLog = "";
  let initRun: Run = { code: null, out: "" };
  let scriptText = "";
  const servers: ChildProcess[] = [];
  const uid = isRoot ? Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim()) : -1;
  const gid = isRoot ? Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim()) : -1;

  // PostgreSQL refuses to run as root: drop to the postgres user (setpriv execs, no extra process).
  const asPostgres = (file: string, args: string[]): [string, string[]] =>
    isRoot ? [tools.setpriv!, ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", file, ...args]] : [file, args];
  const own = (path: string): void => {
    if (isRoot) chownSync(path, uid, gid);
  };
  const baseEnv = (): NodeJS.ProcessEnv => ({ PATH: `${pgBin}:/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: "C.UTF-8" });

  /** psql as `user` on database `db`; over TCP with a password, or over the socket as the superuser. */
  function psql(sql: string, opts: { user: string; db: string; password?: string; tcp?: boolean }): Promise<Run> {
    const env: NodeJS.ProcessEnv = { ...baseEnv(), PGCONNECT_TIMEOUT: "5" };
    if (opts.password !== undefined) env.PGPASSWORD = opts.password;
    const host = opts.tcp === false ? dir : "127.0.0.1";
    const args = ["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", String(port), "-U", opts.user, "-d", opts.db, "-c", sql];
    return run(join(pgBin, "psql"), args, env, 20_000);
  }
  const asSuper = (sql: string, db = SUPERUSER): Promise<Run> => psql(sql, { user: SUPERUSER, db, tcp: false });
  const asDendrite = (sql: string, password = PASSWORD, db = DB.database): Promise<Run> => psql(sql, { user: DB.role, db, password });
  async function superValue(sql: string, db = SUPERUSER): Promise<string> {
    const r = await asSuper(sql, db);
    assert.equal(r.code, 0, r.out);
    return r.out.trim();
  }

  /** Starts postgres in the foreground (logs on stderr, as in the container) and waits until it accepts connections. */
  async function startServer(extra: string[]): Promise<ChildProcess> {
    const args = ["-D", dataDir, ...SERVER_ARGS, "-c", `unix_socket_directories=${dir}`, "-c", `port=${port}`, ...extra];
    // Bounded by coreutils' timeout even if this test process dies.
    const proc = spawn(tools.timeout!, ["-s", "KILL", "240", ...asPostgres(tools.postgres!, args).flat()], { env: baseEnv(), stdio: ["ignore", "pipe", "pipe"] });
    servers.push(proc);
    proc.stdout!.on("data", (d: Buffer) => (serverLog += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (serverLog += d.toString()));
    for (let i = 0; ; i++) {
      const r = await run(tools.pgIsready!, ["-q", "-h", dir, "-p", String(port), "-U", SUPERUSER, "-d", "postgres", "-t", "1"], baseEnv(), 5000);
      if (r.code === 0) return proc;
      if (proc.exitCode !== null || i > 150) throw new Error(`postgres did not start:\n${serverLog}`);
      await sleep(200);
    }
  }

  async function stopServer(mode: "fast" | "immediate"): Promise<Run> {
    return run(...asPostgres(tools.pgCtl!, ["stop", "-D", dataDir, "-m", mode, "-w", "-t", "30"]), baseEnv(), 40_000);
  }

  /** Runs an init script exactly as the entrypoint does: executed (it is executable), as the postgres user. */
  function runInitScript(name: string, text: string): Promise<Run> {
    const file = join(dir, name);
    writeFileSync(file, text, { mode: 0o555 });
    chmodSync(file, 0o555);
    own(file);
    const env: NodeJS.ProcessEnv = {
      ...baseEnv(),
      POSTGRES_USER: SUPERUSER,
      POSTGRES_DB: SUPERUSER,
      PGPASSWORD: SUPER_PASSWORD,
      PGDATA: dataDir,
      // The image's temporary server listens on the default socket; here it is the temp dir.
      PGHOST: dir,
      PGPORT: String(port),
    };
    return run(...asPostgres(file, []), env, 30_000);
  }

  function writeSecret(name: string, content: string): string {
    const file = join(dir, name);
    writeFileSync(file, content, { mode: 0o400 });
    own(file);
    return file;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "pg-real-"));
    own(dir);
    dataDir = join(dir, "data");
    port = await freePort();
    const superPwFile = writeSecret("super.pw", SUPER_PASSWORD);
    // The image's initdb: the superuser from POSTGRES_USER, its password from a file, trust on the socket.
    const init = await run(
      ...asPostgres(tools.initdb!, ["-D", dataDir, "-U", SUPERUSER, `--pwfile=${superPwFile}`, "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"]),
      baseEnv(),
      60_000,
    );
    assert.equal(init.code, 0, init.out);
    writeFileSync(join(dataDir, "pg_hba.conf"), "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n");
    own(join(dataDir, "pg_hba.conf"));

    // Phase 1, the entrypoint's temporary server: the service's args, then no TCP at all. Statement
    // logging is forced on here, as an operator debugging might: the script must keep the password out anyway.
    await startServer(["-c", "listen_addresses=", "-c", "log_statement=all"]);
    assert.equal((await asSuper(`CREATE DATABASE ${SUPERUSER}`, "postgres")).code, 0);
    writeSecret("dendrite.pw", PASSWORD);
    scriptText = renderPostgresInitScript({ ...DB, passwordFile: join(dir, "dendrite.pw") });
    initRun = await runInitScript("10-dendrite.sh", scriptText);
    const stopped = await stopServer("fast");
    assert.equal(stopped.code, 0, stopped.out);

    // Phase 2, the service: the same args, listening on loopback TCP.
    await startServer(["-c", "listen_addresses=127.0.0.1"]);
  });

  after(async () => {
    if (dataDir) await stopServer("immediate").catch(() => undefined);
    for (const p of servers) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (process.env.POSTGRES_DEBUG_LOG) writeFileSync(process.env.POSTGRES_DEBUG_LOG, serverLog);
    console.log(`# postgres real test wall time: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  test("the init script ran to completion under the entrypoint's conditions", () => {
    assert.equal(initRun.code, 0, initRun.out);
    assert.match(initRun.out, /created role dendrite and database dendrite/);
  });

  test("Dendrite's role logs in over TCP with its password; a wrong or missing password is refused", async () => {
    const ok = await asDendrite("SELECT current_user || '@' || current_database()");
    assert.equal(ok.code, 0, ok.out);
    assert.equal(ok.out.trim(), "dendrite@dendrite");

    const wrong = await asDendrite("SELECT 1", `${PASSWORD}x`);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.out, /password authentication failed for user "dendrite"/);
    const none = await psql("SELECT 1", { user: DB.role, db: DB.database });
    assert.notEqual(none.code, 0);
    assert.match(none.out, /no password supplied|password authentication failed/);
  });

  test("the password is stored as a SCRAM verifier and appears nowhere in the script, its output or the server log", async () => {
    assert.match(await superValue("SELECT rolpassword FROM pg_authid WHERE rolname = 'dendrite'"), /^SCRAM-SHA-256\$4096:/);
    assert.ok(scriptText.includes(join(dir, "dendrite.pw")), "the script references the file");
    assert.equal(scriptText.includes(PASSWORD), false);
    assert.equal(initRun.out.includes(PASSWORD), false);
    assert.match(serverLog, /LOG:  statement: REVOKE ALL ON SCHEMA public FROM PUBLIC/, "statement logging was on while the script ran");
    assert.equal(serverLog.includes(PASSWORD), false);
  });

  test("the role has no privilege beyond login", async () => {
    const attrs = await superValue(
      "SELECT concat_ws(',', rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolinherit) FROM pg_roles WHERE rolname = 'dendrite'",
    );
    assert.equal(attrs, "t,f,f,f,f,f,t");
    assert.equal(await superValue("SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'dendrite'"), "0");

    const createRole = await asDendrite("CREATE ROLE x");
    assert.notEqual(createRole.code, 0);
    assert.match(createRole.out, /permission denied to create role/);
    const createDb = await asDendrite("CREATE DATABASE x");
    assert.notEqual(createDb.code, 0);
    assert.match(createDb.out, /permission denied to create database/);
    const escalate = await asDendrite("ALTER ROLE dendrite SUPERUSER");
    assert.notEqual(escalate.code, 0);
    assert.match(escalate.out, /permission denied|must be superuser/);
  });

  test("the role owns its database (UTF8, C collation) and can create and use tables in it", async () => {
    assert.equal(
      await superValue("SELECT concat_ws(',', pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype) FROM pg_database WHERE datname = 'dendrite'"),
      "dendrite,UTF8,C,C",
    );
    // The template's locale differs, so C above comes from the script, not from the cluster default.
    assert.equal(await superValue("SELECT datcollate FROM pg_database WHERE datname = 'template1'"), "C.UTF-8");
    const r = await asDendrite("CREATE TABLE t (id bigserial PRIMARY KEY, body text); INSERT INTO t (body) VALUES ('héllo'); SELECT body FROM t");
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out.trim(), "héllo");
    assert.equal(await superValue("SELECT tableowner FROM pg_tables WHERE tablename = 't'", DB.database), "dendrite");
  });

  test("only the owner may connect to Dendrite's database, and Dendrite to no other", async () => {
    const otherPassword = randomBytes(12).toString("hex");
    assert.equal((await asSuper(`CREATE ROLE other LOGIN PASSWORD '${otherPassword}'`)).code, 0);
    const other = await psql("SELECT 1", { user: "other", db: DB.database, password: otherPassword });
    assert.notEqual(other.code, 0);
    assert.match(other.out, /permission denied for database "dendrite"/);
    // The same role can connect where CONNECT was left to PUBLIC: the refusal above is the script's REVOKE.
    assert.equal((await asSuper("CREATE DATABASE open_db")).code, 0);
    const open = await psql("SELECT 1", { user: "other", db: "open_db", password: otherPassword });
    assert.equal(open.code, 0, open.out);

    for (const db of [SUPERUSER, "postgres", "template1"]) {
      const r = await asDendrite("SELECT 1", PASSWORD, db);
      assert.notEqual(r.code, 0, db);
      assert.match(r.out, new RegExp(`permission denied for database "${db}"`));
    }
  });

  test("a short or missing password file stops the script before anything is created", async () => {
    writeSecret("short.pw", "tooshort");
    const short = await runInitScript("20-short.sh", renderPostgresInitScript({ database: "db_short", role: "r_short", passwordFile: join(dir, "short.pw") }));
    assert.notEqual(short.code, 0);
    assert.match(short.out, /fewer than 16 characters/);
    const absent = await runInitScript("30-absent.sh", renderPostgresInitScript({ database: "db_absent", role: "r_absent", passwordFile: join(dir, "absent.pw") }));
    assert.notEqual(absent.code, 0);
    assert.match(absent.out, /password file .*absent\.pw is missing/);
    assert.equal(await superValue("SELECT count(*) FROM pg_roles WHERE rolname IN ('r_short', 'r_absent')"), "0");
    assert.equal(await superValue("SELECT count(*) FROM pg_database WHERE datname IN ('db_short', 'db_absent')"), "0");
  });

  test("the server runs with every rendered setting (1 GiB node)", async () => {
    const expected = new Map<string, string>();
    for (let i = 0; i < SERVER_ARGS.length; i += 2) {
      const [name, ...value] = SERVER_ARGS[i + 1].split("=");
      expected.set(name, value.join("="));
    }
    const names = [...expected.keys()];
    const r = await asSuper(`SELECT name || '=' || current_setting(name) FROM unnest(ARRAY['${names.join("','")}']) AS name`);
    assert.equal(r.code, 0, r.out);
    const actual = new Map(r.out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
    for (const [name, value] of expected) assert.equal(normalize(actual.get(name) ?? "<missing>"), normalize(value), name);
    assert.equal(actual.get("shared_buffers"), "64MB");
    assert.equal(actual.get("max_connections"), String(TUNING.maxConnections));
    // Set on the command line, not taken from a default.
    assert.equal(await superValue("SELECT count(*) FROM pg_settings WHERE source = 'command line' AND name = ANY (ARRAY['" + names.join("','") + "'])"), String(names.length));
  });
  // Last: it restarts the server with rotated secrets (defect 11 of issue 15).
  test("rotation: after a restart with new secrets, the service's start script moves both roles to them; the old passwords are refused", async () => {
    const NEW_PASSWORD = `${randomBytes(24).toString("base64url")}'" \\$y;-- :pw`;
    const NEW_SUPER = randomBytes(18).toString("base64url");
    const tcp = (user: string, password: string): Promise<Run> => psql("SELECT current_user", { user, db: user === DB.role ? DB.database : "postgres", password });
    // Statement logging on for every later start (what an operator debugging might leave on).
    assert.equal((await asSuper("ALTER SYSTEM SET log_statement = 'all'")).code, 0);
    const rotate = (file: string, content: string): void => {
      rmSync(join(dir, file), { force: true });
      writeSecret(file, content);
    };
    rotate("dendrite.pw", NEW_PASSWORD);
    rotate("super.pw", NEW_SUPER);

    // The defect: the image's entrypoint on an existing data directory just starts the server; the
    // init script does not run again, so the role keeps the old password while Dendrite has the new one.
    assert.equal((await stopServer("fast")).code, 0);
    await startServer(["-c", "listen_addresses=127.0.0.1"]);
    const before = await tcp(DB.role, NEW_PASSWORD);
    assert.notEqual(before.code, 0);
    assert.match(before.out, /password authentication failed for user "dendrite"/);
    assert.equal((await stopServer("fast")).code, 0);

    // The fix: the service's command, with a stand-in for the image's entrypoint that only execs the server.
    const entrypoint = join(dir, "entrypoint.sh");
    writeFileSync(entrypoint, '#!/bin/sh\nexec "$@"\n', { mode: 0o555 });
    own(entrypoint);
    const startText = renderPostgresStartScript({ role: DB.role, passwordFile: join(dir, "dendrite.pw"), superuserPasswordFile: join(dir, "super.pw"), entrypoint });
    const start = join(dir, "hm-postgres-start");
    writeFileSync(start, startText, { mode: 0o555 });
    own(start);
    const logFrom = serverLog.length;
    const env = { ...baseEnv(), PGDATA: dataDir, POSTGRES_USER: SUPERUSER, PGHOST: dir, PGPORT: String(port) };
    const args = [start, "postgres", "-D", dataDir, ...SERVER_ARGS, "-c", `unix_socket_directories=${dir}`, "-c", `port=${port}`, "-c", "listen_addresses=127.0.0.1"];
    const proc = spawn(tools.timeout!, ["-s", "KILL", "240", ...asPostgres(args[0], args.slice(1)).flat()], { env, stdio: ["ignore", "pipe", "pipe"] });
    servers.push(proc);
    proc.stdout!.on("data", (d: Buffer) => (serverLog += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (serverLog += d.toString()));
    // Over TCP only: the temporary server listens on the socket alone, so an answer here is the real server.
    for (let i = 0; ; i++) {
      const r = await run(tools.pgIsready!, ["-q", "-h", "127.0.0.1", "-p", String(port), "-t", "1"], baseEnv(), 5000);
      if (r.code === 0) break;
      if (proc.exitCode !== null || i > 150) throw new Error(`the start script did not bring the server up:\n${serverLog.slice(logFrom)}`);
      await sleep(200);
    }
    const log = serverLog.slice(logFrom);
    assert.match(log, new RegExp(`passwords of ${SUPERUSER} and dendrite set from their secrets`));
    assert.match(log, /statement: SET log_statement = 'none'/, "statement logging was on while the passwords were set");

    const now = await tcp(DB.role, NEW_PASSWORD);
    assert.equal(now.code, 0, now.out);
    assert.equal(now.out.trim(), "dendrite");
    const old = await tcp(DB.role, PASSWORD);
    assert.notEqual(old.code, 0);
    assert.match(old.out, /password authentication failed for user "dendrite"/);
    assert.equal((await tcp(SUPERUSER, NEW_SUPER)).code, 0);
    assert.notEqual((await tcp(SUPERUSER, SUPER_PASSWORD)).code, 0);
    assert.match(await superValue("SELECT rolpassword FROM pg_authid WHERE rolname = 'dendrite'"), /^SCRAM-SHA-256\$4096:/);
    for (const secret of [NEW_PASSWORD, NEW_SUPER, PASSWORD, SUPER_PASSWORD]) {
      assert.equal(serverLog.includes(secret), false, "a password reached the server log or the script's output");
      assert.equal(startText.includes(secret), false);
    }

    // A missing secret stops the start before the real server listens, and leaves no server running.
    assert.equal((await stopServer("fast")).code, 0);
    rmSync(join(dir, "dendrite.pw"), { force: true });
    const failed = await run(...asPostgres(start, ["postgres", "-D", dataDir, "-c", "listen_addresses=127.0.0.1"]), env, 60_000);
    assert.notEqual(failed.code, 0);
    assert.match(failed.out, /password file .*dendrite\.pw is missing/);
    const down = await run(tools.pgIsready!, ["-q", "-h", dir, "-p", String(port), "-t", "1"], baseEnv(), 5000);
    assert.notEqual(down.code, 0, "the temporary server was left running");
    writeSecret("dendrite.pw", NEW_PASSWORD);
  });
});

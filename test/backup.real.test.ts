import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { renderBackupScript, renderDumpScript, renderPgpass, renderRestoreScript } from "../components/render/backup";
import { renderPostgresInitScript } from "../components/render/postgres";
import { planStack } from "../plan/plan";
import { findTools } from "./support/realTool";
import { ofType, plannedFile, type Inputs } from "./support/planned";

// The backup and restore drill with real programs: a real PostgreSQL holding a Dendrite-like schema
// and data, a media store laid out like Dendrite's, the rendered backup and dump scripts running
// side by side (as the two containers do) into a real restic repository on local disk, then the
// database and files destroyed, a fresh database made by the rendered init script (a fresh stack),
// and the rendered restore script run. Everything is compared: row counts, a checksum of every
// table, sequence positions, every media file byte for byte. Then what day 2 brings: a dump that
// outlasts the dump service's health window, a fresh server with no media yet, restores given a
// mistyped or unverifiable snapshot.

const isRoot = process.getuid?.() === 0;
const needed = {
  initdb: ["initdb", "postgresql"],
  postgres: ["postgres", "postgresql"],
  pgCtl: ["pg_ctl", "postgresql"],
  pgIsready: ["pg_isready", "postgresql"],
  pgDump: ["pg_dump", "postgresql-client"],
  restic: ["restic", "restic"],
  timeout: ["timeout", "coreutils"],
  ...(isRoot ? { setpriv: ["setpriv", "util-linux"] } : {}),
} as const;
const { tools, skip } = findTools<keyof typeof needed | "setpriv">(needed);
const pgBin = tools.postgres ? dirname(realpathSync(tools.postgres)) : "";

const SUPERUSER = "pgsuper";
const DB = { database: "dendrite", role: "dendrite" };
const DB_PASSWORD = `${randomBytes(24).toString("base64url")}:\\x`; // ':' and '\' exercise the pgpass escaping
const REPO_PASSWORD = randomBytes(32).toString("base64url");
const HOST = "hm-drill";
// A string that appears in the database and in a media file: the repository must not contain it.
const MARKER = `drill-marker-${randomBytes(8).toString("hex")}`;
const TABLES = ["userapi_accounts", "roomserver_events", "roomserver_event_json", "syncapi_output_room_events", "mediaapi_media_repository", "keyserver_device_keys"];

interface Run {
  code: number | null;
  out: string;
  ms: number;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, signal?: AbortSignal): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs, killSignal: "SIGKILL", signal });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", (e) => (e.name === "AbortError" ? undefined : reject(e)));
    child.on("close", (code) => resolve({ code, out, ms: Date.now() - t0 }));
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

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? filesUnder(full) : [full];
  });
}

/** Every file under `dir` with its size and SHA-256, by relative path. */
function fileDigests(dir: string): Map<string, string> {
  return new Map(
    filesUnder(dir)
      .map((f) => [relative(dir, f), `${statSync(f).size}:${createHash("sha256").update(readFileSync(f)).digest("hex")}`] as [string, string])
      .sort(([a], [b]) => a.localeCompare(b)),
  );
}

function dirBytes(dir: string): number {
  return filesUnder(dir).reduce((sum, f) => sum + statSync(f).size, 0);
}

interface Summary {
  files_new: number;
  files_changed: number;
  files_unmodified: number;
  data_added: number;
  total_bytes_processed: number;
  snapshot_id: string;
}

function lastSummary(file: string): Summary {
  const lines = readFileSync(file, "utf8").split("\n").filter((l) => l.includes('"message_type":"summary"'));
  assert.ok(lines.length > 0, `no restic summary in ${file}`);
  return JSON.parse(lines[lines.length - 1]!) as Summary;
}

describe("backup drill: rendered backup, dump and restore scripts with a real PostgreSQL and restic", { skip, timeout: 1_200_000 }, () => {
  const started = Date.now();
  let dir = "";
  let dataDir = "";
  let port = 0;
  let serverLog = "";
  const servers: ChildProcess[] = [];
  const measured: string[] = [];
  const paths = { repo: "", spool: "", backupState: "", dumpState: "", media: "", cache: "", pgpass: "", repoPassword: "", wrongPassword: "", scripts: "" };
  const uid = isRoot ? Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim()) : -1;
  const gid = isRoot ? Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim()) : -1;
  const asPostgres = (file: string, args: string[]): [string, string[]] =>
    isRoot ? [tools.setpriv!, ["--reuid=postgres", "--regid=postgres", "--init-groups", "--", file, ...args]] : [file, args];
  const own = (p: string): void => {
    if (isRoot) chownSync(p, uid, gid);
  };
  const PATH = `${pgBin}:${dirname(tools.restic ?? "/usr/bin/restic")}:/usr/sbin:/usr/bin:/sbin:/bin`;
  const baseEnv = (): NodeJS.ProcessEnv => ({ PATH, LC_ALL: "C.UTF-8", HOME: dir });

  function psql(sql: string, opts: { user: string; db: string; password?: string }): Promise<Run> {
    const env: NodeJS.ProcessEnv = { ...baseEnv(), PGCONNECT_TIMEOUT: "5" };
    if (opts.password !== undefined) env.PGPASSWORD = opts.password;
    const host = opts.password === undefined ? dir : "127.0.0.1";
    const args = ["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", String(port), "-U", opts.user, "-d", opts.db, "-c", sql];
    return run(join(pgBin, "psql"), args, env, 120_000);
  }
  async function superSql(sql: string, db = SUPERUSER): Promise<string> {
    const r = await psql(sql, { user: SUPERUSER, db });
    assert.equal(r.code, 0, r.out);
    return r.out.trim();
  }
  async function dendriteSql(sql: string): Promise<string> {
    const r = await psql(sql, { user: DB.role, db: DB.database, password: DB_PASSWORD });
    assert.equal(r.code, 0, r.out);
    return r.out.trim();
  }

  /** The state that must survive: per table its row count and an order-independent checksum, and the sequences. */
  async function databaseFingerprint(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const t of TABLES) {
      out.set(t, await dendriteSql(`SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM ${t} AS x`));
    }
    out.set("sequences", await dendriteSql("SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences"));
    out.set("indexes", await dendriteSql("SELECT string_agg(indexdef, ';' ORDER BY indexdef) FROM pg_indexes WHERE schemaname = 'public'"));
    return out;
  }

  async function startServer(): Promise<void> {
    const args = ["-D", dataDir, "-c", `unix_socket_directories=${dir}`, "-c", `port=${port}`, "-c", "listen_addresses=127.0.0.1"];
    const proc = spawn(tools.timeout!, ["-s", "KILL", "1500", ...asPostgres(tools.postgres!, args).flat()], { env: baseEnv(), stdio: ["ignore", "pipe", "pipe"] });
    servers.push(proc);
    proc.stdout!.on("data", (d: Buffer) => (serverLog += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (serverLog += d.toString()));
    for (let i = 0; ; i++) {
      const r = await run(tools.pgIsready!, ["-q", "-h", dir, "-p", String(port), "-t", "1"], baseEnv(), 5000);
      if (r.code === 0) return;
      if (proc.exitCode !== null || i > 150) throw new Error(`postgres did not start:\n${serverLog}`);
      await sleep(200);
    }
  }

  /** A fresh stack's database: what the postgres image's entrypoint and our init script make. */
  async function freshDatabase(): Promise<void> {
    const file = join(dir, "10-dendrite.sh");
    writeFileSync(file, renderPostgresInitScript({ ...DB, passwordFile: join(dir, "dendrite.pw") }), { mode: 0o555 });
    own(file);
    const env = { ...baseEnv(), POSTGRES_USER: SUPERUSER, POSTGRES_DB: SUPERUSER, PGHOST: dir, PGPORT: String(port) };
    const r = await run(...asPostgres(file, []), env, 60_000);
    assert.equal(r.code, 0, r.out);
  }

  const renderParams = (media = paths.media) => ({
    backup: renderBackupScript({
      host: HOST,
      spoolDir: paths.spool,
      stateDir: paths.backupState,
      mediaDir: media,
      intervalSeconds: 3600,
      retrySeconds: 60,
      retention: { daily: 7, weekly: 4, monthly: 6 },
      dumpTimeoutSeconds: 300,
      answerTimeoutSeconds: 30,
    }),
    dump: renderDumpScript({ spoolDir: paths.spool, stateDir: paths.dumpState, database: { host: "127.0.0.1", port, name: DB.database, user: DB.role }, dumpTimeoutSeconds: 300 }),
    restore: renderRestoreScript({ host: HOST, mediaDir: paths.media }),
  });

  function resticEnv(passwordFile = paths.repoPassword, repo = paths.repo): NodeJS.ProcessEnv {
    return { ...baseEnv(), RESTIC_REPOSITORY: repo, RESTIC_PASSWORD_FILE: passwordFile, RESTIC_CACHE_DIR: paths.cache, TMPDIR: dir };
  }

  interface RunOptions {
    passwordFile?: string;
    repo?: string;
    media?: string;
    /** Put first on the dump side's PATH (a slow pg_dump). */
    dumpPath?: string;
    timeoutMs?: number;
  }

  /** One scheduled run: both containers' scripts side by side, as the two services run them. */
  async function backupOnce(o: RunOptions = {}): Promise<{ backup: Run; dump: Run }> {
    const scripts = renderParams(o.media);
    writeFileSync(join(paths.scripts, "backup.sh"), scripts.backup, { mode: 0o555 });
    writeFileSync(join(paths.scripts, "dump.sh"), scripts.dump, { mode: 0o555 });
    const stop = new AbortController();
    const timeoutMs = o.timeoutMs ?? 120_000;
    const dumpEnv = { ...baseEnv(), PGPASSFILE: paths.pgpass, ...(o.dumpPath ? { PATH: `${o.dumpPath}:${PATH}` } : {}) };
    const dump = run("sh", [join(paths.scripts, "dump.sh"), "once"], dumpEnv, timeoutMs, stop.signal);
    const backup = await run("sh", [join(paths.scripts, "backup.sh"), "once"], resticEnv(o.passwordFile, o.repo), timeoutMs + 180_000);
    // A dump side still waiting (the backup side failed before asking) must not serve the next run.
    const done = await Promise.race([dump, sleep(5000).then(() => undefined)]);
    if (!done) stop.abort();
    return { backup, dump: done ?? (await dump) };
  }

  async function restore(args: string[], o: Pick<RunOptions, "passwordFile" | "repo"> = {}): Promise<Run> {
    writeFileSync(join(paths.scripts, "restore.sh"), renderParams().restore, { mode: 0o555 });
    const env = { ...resticEnv(o.passwordFile, o.repo), PGHOST: "127.0.0.1", PGPORT: String(port), PGDATABASE: DB.database, PGUSER: DB.role, PGPASSFILE: paths.pgpass };
    return run("sh", [join(paths.scripts, "restore.sh"), ...args], env, 300_000);
  }

  async function snapshots(repo = paths.repo): Promise<Array<{ id: string; tags: string[]; hostname: string; time: string }>> {
    const r = await run(tools.restic!, ["snapshots", "--json"], resticEnv(paths.repoPassword, repo), 60_000);
    assert.equal(r.code, 0, r.out);
    return (JSON.parse(r.out) as Array<{ id: string; tags: string[]; hostname: string; time: string }>).sort((a, b) => a.time.localeCompare(b.time));
  }
  const ofKind = async (tag: string, repo = paths.repo): Promise<string[]> => (await snapshots(repo)).filter((s) => s.tags.includes(tag)).map((s) => s.id);

  /** Media laid out as Dendrite's media_api stores it: <base>/<h0>/<h1>/<rest of the hash>/file, thumbnails beside. */
  function writeMedia(n: number, seed: string, from = 0): number {
    let bytes = 0;
    for (let i = from; i < from + n; i++) {
      const hash = createHash("sha256").update(`${seed}-${i}`).digest("base64url");
      const d = join(paths.media, hash[0]!, hash[1]!, hash.slice(2));
      mkdirSync(d, { recursive: true });
      // Incompressible, sizes from empty to 384 KiB; one file carries the marker.
      const size = i === 0 ? 0 : (i * 7919) % (384 * 1024);
      const body = i === 1 ? Buffer.from(`${MARKER}\n`.repeat(64)) : randomBytes(size);
      writeFileSync(join(d, "file"), body);
      if (i % 5 === 0) writeFileSync(join(d, "thumbnail-32x32-crop"), randomBytes(2048));
      bytes += body.length;
    }
    return bytes;
  }

  let originalDb = new Map<string, string>();
  let originalMedia = new Map<string, string>();
  let first: { backup: Run; dump: Run };
  let second: { backup: Run; dump: Run };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "backup-drill-"));
    own(dir);
    for (const k of ["repo", "spool", "backupState", "dumpState", "media", "cache", "scripts"] as const) {
      paths[k] = join(dir, k);
      mkdirSync(paths[k]);
    }
    dataDir = join(dir, "data");
    port = await freePort();
    writeFileSync(join(dir, "dendrite.pw"), DB_PASSWORD, { mode: 0o400 });
    own(join(dir, "dendrite.pw"));
    paths.pgpass = join(dir, "pgpass");
    writeFileSync(paths.pgpass, renderPgpass({ host: "127.0.0.1", port, name: DB.database, user: DB.role, password: DB_PASSWORD }), { mode: 0o600 });
    paths.repoPassword = join(dir, "repo.pw");
    writeFileSync(paths.repoPassword, REPO_PASSWORD, { mode: 0o400 });
    paths.wrongPassword = join(dir, "wrong.pw");
    writeFileSync(paths.wrongPassword, `${REPO_PASSWORD}x`, { mode: 0o400 });

    const init = await run(...asPostgres(tools.initdb!, ["-D", dataDir, "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"]), baseEnv(), 60_000);
    assert.equal(init.code, 0, init.out);
    await startServer();
    await superSql(`CREATE DATABASE ${SUPERUSER}`, "postgres");
    await freshDatabase();

    // A Dendrite-like schema (names and column kinds from Dendrite's storage packages), filled as Dendrite's role.
    await dendriteSql(`
      CREATE TABLE userapi_accounts (localpart TEXT NOT NULL, server_name TEXT NOT NULL, created_ts BIGINT NOT NULL, password_hash TEXT,
        appservice_id TEXT, is_deactivated BOOLEAN DEFAULT FALSE, account_type SMALLINT NOT NULL, PRIMARY KEY (localpart, server_name));
      CREATE SEQUENCE roomserver_event_nid_seq;
      CREATE TABLE roomserver_events (event_nid BIGINT PRIMARY KEY DEFAULT nextval('roomserver_event_nid_seq'), room_nid BIGINT NOT NULL,
        event_type_nid BIGINT NOT NULL, event_state_key_nid BIGINT NOT NULL, sent_to_output BOOLEAN NOT NULL DEFAULT FALSE,
        state_snapshot_nid BIGINT NOT NULL DEFAULT 0, depth BIGINT NOT NULL, event_id TEXT NOT NULL CONSTRAINT roomserver_event_id_unique UNIQUE,
        auth_event_nids BIGINT[] NOT NULL, is_rejected BOOLEAN NOT NULL DEFAULT FALSE);
      CREATE INDEX roomserver_events_room_idx ON roomserver_events (room_nid, depth);
      CREATE TABLE roomserver_event_json (event_nid BIGINT NOT NULL PRIMARY KEY REFERENCES roomserver_events (event_nid), event_json TEXT NOT NULL);
      CREATE TABLE syncapi_output_room_events (id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL,
        headered_event_json JSONB NOT NULL, type TEXT NOT NULL, sender TEXT NOT NULL, contains_url BOOLEAN NOT NULL,
        add_state_ids TEXT[], remove_state_ids TEXT[], session_id BIGINT, transaction_id TEXT, exclude_from_sync BOOL DEFAULT FALSE);
      CREATE TABLE mediaapi_media_repository (media_id TEXT NOT NULL, media_origin TEXT NOT NULL, content_type TEXT NOT NULL,
        file_size_bytes BIGINT NOT NULL, creation_ts BIGINT NOT NULL, upload_name TEXT NOT NULL, base64hash TEXT NOT NULL, user_id TEXT NOT NULL,
        UNIQUE (media_id, media_origin));
      CREATE TABLE keyserver_device_keys (user_id TEXT NOT NULL, device_id TEXT NOT NULL, ts_added_secs BIGINT NOT NULL, key_json BYTEA,
        stream_id BIGINT NOT NULL, display_name TEXT, UNIQUE (user_id, device_id));
      INSERT INTO userapi_accounts SELECT 'user' || i, 'example.org', 1700000000000 + i, '$2a$10$' || md5(i::text), NULL, i % 17 = 0, 1
        FROM generate_series(1, 500) i;
      INSERT INTO roomserver_events (room_nid, event_type_nid, event_state_key_nid, depth, event_id, auth_event_nids)
        SELECT i % 40, i % 9, i % 5, i, '$' || md5(i::text) || ':example.org', ARRAY[greatest(i - 1, 1), greatest(i - 2, 1)] FROM generate_series(1, 12000) i;
      INSERT INTO roomserver_event_json SELECT event_nid, json_build_object('type', 'm.room.message', 'content',
        json_build_object('body', 'héllo wörld ✓ ' || (SELECT string_agg(md5(event_nid || '-' || k), ' ') FROM generate_series(1, 40) k), 'msgtype', 'm.text'))::text
        FROM roomserver_events;
      INSERT INTO syncapi_output_room_events (event_id, room_id, headered_event_json, type, sender, contains_url, add_state_ids, session_id, transaction_id)
        SELECT '$' || md5(i::text) || ':example.org', '!room' || (i % 40) || ':example.org',
          jsonb_build_object('event', jsonb_build_object('n', i, 'body', '${MARKER} ' || md5((i * 3)::text))), 'm.room.message',
          '@user' || (i % 500 + 1) || ':example.org', i % 11 = 0, ARRAY['$a' || i, '$b' || i], NULLIF(i % 3, 0), 'txn' || i FROM generate_series(1, 12000) i;
      INSERT INTO mediaapi_media_repository SELECT 'media' || i, 'example.org', 'image/png', i * 1000, 1700000000000 + i, 'pic' || i || '.png',
        md5(i::text), '@user' || (i % 500 + 1) || ':example.org' FROM generate_series(1, 300) i;
      INSERT INTO keyserver_device_keys SELECT '@user' || i || ':example.org', 'DEV' || i, 1700000000 + i, decode(md5(i::text) || '00ff', 'hex'),
        i, CASE WHEN i % 2 = 0 THEN 'phone ' || i END FROM generate_series(1, 400) i;
    `);
    writeMedia(200, "first");
  });

  after(async () => {
    if (dataDir) await run(...asPostgres(tools.pgCtl!, ["stop", "-D", dataDir, "-m", "immediate", "-w", "-t", "30"]), baseEnv(), 40_000).catch(() => undefined);
    for (const p of servers) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(`# backup drill: ${measured.join("; ")}; wall time ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  test("a first run backs up the media and a streamed dump of the database, encrypted", async () => {
    originalDb = await databaseFingerprint();
    originalMedia = fileDigests(paths.media);
    first = await backupOnce();
    assert.equal(first.backup.code, 0, first.backup.out);
    assert.equal(first.dump.code, 0, first.dump.out);
    assert.match(first.backup.out, /backup complete/);
    assert.match(first.dump.out, /pg_dump exited 0/);
    const media = lastSummary(join(paths.backupState, "media.json"));
    assert.equal(media.files_new, originalMedia.size);
    const database = lastSummary(join(paths.backupState, "database.json"));
    assert.equal(database.files_new, 1);
    assert.ok(database.total_bytes_processed > 4_000_000, `dump of ${database.total_bytes_processed} bytes`);
    const tags = (await snapshots()).map((s) => `${s.hostname}/${s.tags.join(",")}`).sort();
    assert.deepEqual(tags, [`${HOST}/media`, `${HOST}/postgres`]);
    // Client-side encryption: neither the database's nor a media file's plain text is in the repository.
    const hits = run("grep", ["-rlF", MARKER, paths.repo], baseEnv(), 60_000);
    assert.equal((await hits).code, 1, "the marker was found in the repository");
    const dumpPlain = run("grep", ["-rlF", "héllo wörld", paths.repo], baseEnv(), 60_000);
    assert.equal((await dumpPlain).code, 1);
    measured.push(`first backup ${first.backup.ms} ms (media ${dirBytes(paths.media)} B in ${originalMedia.size} files, dump ${database.total_bytes_processed} B)`);
    measured.push(`repository after the first run ${dirBytes(paths.repo)} B`);
  });

  test("a second run adds only what changed, and retention keeps one snapshot per day", async () => {
    const before = originalMedia.size;
    writeMedia(1, "second", 3);
    // A new account: pg_dump writes userapi_accounts last, so the dump changes at its end (and in its
    // first lines, which carry a \restrict key that differs in every dump: seen with pg_dump 15.18).
    await dendriteSql("INSERT INTO userapi_accounts VALUES ('late', 'example.org', 1, NULL, NULL, FALSE, 1)");
    originalDb = await databaseFingerprint();
    originalMedia = fileDigests(paths.media);
    assert.equal(originalMedia.size, before + 1);
    const repoBefore = dirBytes(paths.repo);
    second = await backupOnce();
    assert.equal(second.backup.code, 0, second.backup.out);
    const media = lastSummary(join(paths.backupState, "media.json"));
    assert.equal(media.files_new, 1);
    assert.equal(media.files_changed, 0);
    assert.equal(media.files_unmodified, before);
    const database = lastSummary(join(paths.backupState, "database.json"));
    // One new row: restic's content-defined chunks (about 1 MiB) store a small part of the dump again, not all of it.
    assert.ok(database.data_added < database.total_bytes_processed / 2, `added ${database.data_added} of ${database.total_bytes_processed}`);
    // keep-daily 7: the first run's snapshots (same day) are forgotten and pruned.
    const tags = (await snapshots()).map((s) => s.tags.join(",")).sort();
    assert.deepEqual(tags, ["media", "postgres"]);
    measured.push(`second backup ${second.backup.ms} ms (media added ${media.data_added} B, database added ${database.data_added} of ${database.total_bytes_processed} B)`);
    measured.push(`repository after the second run ${dirBytes(paths.repo)} B (was ${repoBefore} B)`);
  });

  test("a dump and upload that outlast the dump service's health window: both services stay healthy, by their own rendered checks", async () => {
    // The numbers are the services' own: their rendered healthchecks and Swarm settings, from the dev plan.
    const dev = await planStack("dev");
    assert.equal(dev.error, undefined, String(dev.error));
    const spec = (name: string): Inputs => ofType(dev, "docker:index/service:Service").map((r) => r.inputs as Inputs).find((x) => x.name === name)!.taskSpec.containerSpec;
    const secondsOf = (v: string): number => {
      const m = /^(\d+)s$/.exec(v);
      assert.ok(m, `a Swarm duration in seconds: ${v}`);
      return Number(m[1]);
    };
    const swarm = spec("backup-dump").healthcheck as Inputs;
    assert.deepEqual(swarm.tests, ["CMD", "/bin/sh", "/usr/local/bin/hm-health"]);
    const interval = secondsOf(swarm.interval);
    const retries = swarm.retries as number;
    const checks = {
      dump: plannedFile(dev, "backup-dump-health/hm-health").replaceAll("'/state/", `'${paths.dumpState}/`),
      backup: plannedFile(dev, "backup-health/hm-health").replaceAll("'/state/", `'${paths.backupState}/`),
    };
    for (const text of Object.values(checks)) assert.doesNotMatch(text, /'\/state\//, "every path of the check points at the drill's state");
    const maxAge = Number(/allowed: (\d+)s/.exec(checks.dump)![1]);
    // A heartbeat that stops is killed by Swarm at most this long after its last write: age > maxAge
    // fails a check, `retries` failures in a row (one per interval) kill the task.
    const window = maxAge + retries * interval;
    assert.ok(window >= 120 && window <= 600, `dump health window ${window} s`);
    for (const [name, text] of Object.entries(checks)) writeFileSync(join(paths.scripts, `health-${name}.sh`), text, { mode: 0o555 });

    // pg_dump, slowed down: the real dump, whose first 64 KiB reach restic at once and the rest only
    // after the whole window and more, so restic's upload is in flight all along.
    const hold = window + 15;
    const slowBin = join(dir, "slow-bin");
    mkdirSync(slowBin, { recursive: true });
    writeFileSync(
      join(slowBin, "pg_dump"),
      `#!/bin/sh
set -eu
out=
for a do
  shift
  case "$a" in --file=*) out=\${a#--file=} ;; *) set -- "$@" "$a" ;; esac
done
tmp='${join(dir, "slow-dump.sql")}'
'${join(pgBin, "pg_dump")}' "$@" --file="$tmp"
{ head -c 65536 "$tmp"; sleep ${hold}; tail -c +65537 "$tmp"; } >"$out"
rm -f "$tmp"
`,
      { mode: 0o555 },
    );
    own(slowBin);
    const before = await ofKind("postgres");
    let finished = false;
    const verdicts: Array<{ at: number; name: string; code: number | null; out: string }> = [];
    const t0 = Date.now();
    const running = backupOnce({ dumpPath: slowBin, timeoutMs: (hold + 120) * 1000 }).finally(() => (finished = true));
    // Every 5 s, finer than Swarm's interval: a check that would fail at any phase of Swarm's clock fails here.
    await sleep(2000);
    while (!finished) {
      for (const name of Object.keys(checks)) {
        const r = await run("sh", [join(paths.scripts, `health-${name}.sh`)], baseEnv(), 10_000);
        verdicts.push({ at: Math.round((Date.now() - t0) / 1000), name, code: r.code, out: r.out.trim() });
      }
      await Promise.race([running, sleep(5000)]);
    }
    const { backup, dump } = await running;
    const took = (Date.now() - t0) / 1000;
    assert.equal(dump.code, 0, dump.out);
    assert.equal(backup.code, 0, backup.out);
    assert.match(backup.out, /backup complete/);
    assert.ok(took > window, `the run took ${took} s, longer than the ${window} s health window`);
    const failed = verdicts.filter((v) => v.code !== 0);
    assert.deepEqual(failed, [], `healthchecks failed during a ${took.toFixed(0)} s run (Swarm kills after ${retries} failures ${interval} s apart)`);
    assert.ok(verdicts.filter((v) => v.name === "dump").length >= window / 5, "checked all along");
    // The slow dump is a complete one, and now the newest database snapshot.
    const after = await ofKind("postgres");
    assert.notDeepEqual(after, before);
    const tail = await run(tools.restic!, ["dump", after[after.length - 1]!, "/dendrite.sql"], resticEnv(), 60_000);
    assert.match(tail.out.slice(-200), /-- PostgreSQL database dump complete/);
    measured.push(`slow dump ${took.toFixed(0)} s against a ${window} s health window, ${verdicts.length} checks passed`);
  });

  test("a wrong repository password fails clearly and touches nothing", async () => {
    const b = await backupOnce({ passwordFile: paths.wrongPassword });
    assert.notEqual(b.backup.code, 0);
    assert.match(b.backup.out, /repository password \(RESTIC_PASSWORD_FILE\) does not open/);
    assert.match(b.backup.out, /wrong password/);
    const r = await restore([], { passwordFile: paths.wrongPassword });
    assert.notEqual(r.code, 0);
    assert.match(r.out, /wrong password/);
    assert.match(r.out, /cannot open the repository/);
    assert.deepEqual(await databaseFingerprint(), originalDb);
    assert.equal((await snapshots()).length, 2);
  });

  test("a failed dump leaves no snapshot that could pass for a backup", async () => {
    const good = writeFileSync;
    good(paths.pgpass, renderPgpass({ host: "127.0.0.1", port, name: DB.database, user: DB.role, password: `${DB_PASSWORD}-wrong` }), { mode: 0o600 });
    try {
      const b = await backupOnce();
      assert.notEqual(b.backup.code, 0);
      assert.match(b.backup.out, /database: FAILED \(restic exit \d+, pg_dump exit 1\)/);
      assert.doesNotMatch(b.backup.out, /backup complete/);
    } finally {
      good(paths.pgpass, renderPgpass({ host: "127.0.0.1", port, name: DB.database, user: DB.role, password: DB_PASSWORD }), { mode: 0o600 });
    }
    const dbSnapshots = (await snapshots()).filter((s) => s.tags.includes("postgres"));
    assert.equal(dbSnapshots.length, 1, "only the good database snapshot remains");
  });

  test("a media store that vanished after media were backed up fails the run loudly, and costs the database neither its backup nor its retention", async () => {
    const databaseBefore = await ofKind("postgres");
    const mediaBefore = await ofKind("media");
    const aside = `${paths.media}.aside`;
    renameSync(paths.media, aside);
    try {
      const b = await backupOnce();
      assert.notEqual(b.backup.code, 0, "the run fails");
      assert.match(b.backup.out, /media: .* is missing or empty but the repository holds media snapshots/);
      assert.doesNotMatch(b.backup.out, /backup complete/);
    } finally {
      renameSync(aside, paths.media);
    }
    const databaseAfter = await ofKind("postgres");
    assert.equal(databaseAfter.length, 1, "retention ran for the database: no snapshot piles up");
    assert.notEqual(databaseAfter[0], databaseBefore[databaseBefore.length - 1], "the database was backed up all the same");
    assert.deepEqual(await ofKind("media"), mediaBefore, "the media snapshots are all kept");
  });

  test("a fresh server with no media directory yet: every run succeeds with retention and check, no snapshot piles up, and a restore gives back the database and an empty media directory", async () => {
    // Dendrite's storage is there, its media directory is not (Dendrite makes it on the first upload).
    const storage = join(dir, "fresh-storage");
    const media = join(storage, "media");
    const repo = join(dir, "fresh-repo");
    mkdirSync(storage);
    own(storage);
    for (const attempt of [1, 2]) {
      rmSync(join(paths.backupState, "last-success"), { force: true });
      const b = await backupOnce({ repo, media });
      assert.equal(b.backup.code, 0, `run ${attempt}:\n${b.backup.out}`);
      assert.match(b.backup.out, /media: .* is missing or empty \(no upload yet\): nothing to back up/);
      assert.match(b.backup.out, /retention: --tag postgres --tag media --keep-daily 7/);
      assert.match(b.backup.out, /no errors were found/, "restic check ran");
      assert.match(b.backup.out, /backup complete/);
      assert.ok(existsSync(join(paths.backupState, "last-success")), "the healthcheck's marker of a good run");
    }
    assert.equal((await ofKind("postgres", repo)).length, 1, "two runs, one database snapshot (same day)");
    assert.deepEqual(await ofKind("media", repo), []);
    assert.equal(existsSync(media), false, "the backup side only reads");

    // A restore from it: the database as it is now, and the media directory made as Dendrite makes it.
    const fingerprint = await databaseFingerprint();
    const r = await restore(["--wipe", "--media", media], { repo });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /the repository holds no media snapshot/);
    assert.deepEqual(await databaseFingerprint(), fingerprint);
    assert.deepEqual(readdirSync(media), []);
    assert.equal(statSync(media).uid, statSync(storage).uid, "owned as Dendrite's storage");
    assert.equal(statSync(media).mode & 0o777, 0o750);
  });

  test("a restore given a mistyped or wrong-kind snapshot id, or a dump that fails verification, changes nothing; a good id restores", async () => {
    const live = { db: await databaseFingerprint(), media: fileDigests(paths.media) };
    const [databaseId] = (await ofKind("postgres")).slice(-1);
    const [mediaId] = (await ofKind("media")).slice(-1);
    assert.ok(databaseId && mediaId);
    const restic = (args: string[], input?: Buffer): Buffer => execFileSync(tools.restic!, args, { env: resticEnv(), input, maxBuffer: 1 << 28, stdio: ["pipe", "pipe", "ignore"] });
    // Snapshots that restic stores faithfully but that are no good as a dump: cut short, or with a
    // statement in the middle that PostgreSQL refuses (its end line intact, so only psql can tell).
    const dump = restic(["dump", databaseId, "/dendrite.sql"]);
    const addDump = (body: Buffer): string => {
      const out = restic(["backup", "--json", "--host", HOST, "--tag", "postgres", "--stdin", "--stdin-filename", "dendrite.sql"], body).toString();
      return /"snapshot_id":"([0-9a-f]+)"/.exec(out)![1]!;
    };
    const cut = dump.indexOf("\n", Math.floor(dump.length * 0.6)) + 1;
    const truncated = addDump(dump.subarray(0, cut));
    const corrupted = addDump(Buffer.concat([dump.subarray(0, cut), Buffer.from("THIS IS NOT SQL;\n"), dump.subarray(cut)]));
    const leftovers = (): string[] => readdirSync(dir).filter((n) => n.includes(".restore."));

    const refused: Array<[string[], RegExp]> = [
      [["--db-snapshot", "deadbeef"], /no database snapshot deadbeef of host hm-drill/],
      [["--db-snapshot", mediaId.slice(0, 8)], /no database snapshot [0-9a-f]{8} of host hm-drill/],
      [["--media-snapshot", "deadbeef"], /no media snapshot deadbeef of host hm-drill/],
      [["--media-snapshot", databaseId], /no media snapshot [0-9a-f]{64} of host hm-drill/],
      [["--db-snapshot", "latest;true"], /expected latest or a hexadecimal id/],
      [["--db-snapshot", truncated], /the dump in snapshot [0-9a-f]{64} is incomplete; nothing was changed/],
      [["--db-snapshot", corrupted], /psql failed; nothing was committed, the database is as it was/],
    ];
    for (const [args, why] of refused) {
      const r = await restore(["--wipe", ...args]);
      assert.deepEqual(await databaseFingerprint(), live.db, `${args.join(" ")}: the database is untouched\n${r.out}`);
      assert.deepEqual(fileDigests(paths.media), live.media, `${args.join(" ")}: the media are untouched\n${r.out}`);
      assert.notEqual(r.code, 0, `${args.join(" ")}: ${r.out}`);
      assert.match(r.out, why, args.join(" "));
      assert.deepEqual(leftovers(), [], "no staging directory is left behind");
    }

    // The good ones, by (short) id, after the live data changed.
    await dendriteSql("DELETE FROM roomserver_event_json WHERE event_nid > 11000");
    writeFileSync(join(paths.media, "stray"), "x");
    const good = await restore(["--wipe", "--db-snapshot", databaseId.slice(0, 10), "--media-snapshot", mediaId]);
    assert.equal(good.code, 0, good.out);
    assert.deepEqual(await databaseFingerprint(), live.db);
    assert.deepEqual(fileDigests(paths.media), live.media);
    assert.deepEqual(leftovers(), []);
    restic(["forget", truncated, corrupted]);
  });
  test("after the database and the media are destroyed, the restore script brings back every row and every byte", async () => {
    // Destroy: the database dropped and made again as a fresh stack makes it, the media store gone
    // (a fresh stack has none until the first upload).
    await superSql(`DROP DATABASE ${DB.database}`);
    await superSql(`DROP ROLE ${DB.role}`);
    await freshDatabase();
    rmSync(paths.media, { recursive: true, force: true });
    assert.equal(await dendriteSql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");

    const r = await restore([]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /restore complete/);
    assert.deepEqual(await databaseFingerprint(), originalDb);
    assert.deepEqual(fileDigests(paths.media), originalMedia);
    assert.equal(await dendriteSql("SELECT tableowner FROM pg_tables WHERE tablename = 'roomserver_events'"), "dendrite");
    // The restored sequence continues where the original stopped.
    assert.equal(await dendriteSql("SELECT nextval('roomserver_event_nid_seq')"), "12001");
    measured.push(`restore ${r.ms} ms`);
  });

  test("a restore refuses to mix into a database or media store that holds data, and --wipe replaces them", async () => {
    const refused = await restore([]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.out, /the database already holds \d+ objects; restore into an empty database or pass --wipe/);
    writeFileSync(join(paths.media, "stray"), "x");
    await dendriteSql("DELETE FROM keyserver_device_keys WHERE stream_id < 10");
    const wiped = await restore(["--wipe"]);
    assert.equal(wiped.code, 0, wiped.out);
    assert.deepEqual(fileDigests(paths.media), originalMedia);
    // nextval above advanced the sequence; the restore puts it back where the backup had it.
    assert.deepEqual(await databaseFingerprint(), originalDb);
  });
});

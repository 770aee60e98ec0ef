import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { MIN_PASSWORD_LENGTH, postgresServerArgs, postgresTuning, renderPostgresInitScript, renderPostgresStartScript, type DendriteDatabase } from "../components/render/postgres";
import { planStack } from "../plan/plan";
import { named, plannedFile, type Inputs } from "./support/planned";
import { findTool, skipReason } from "./support/realTool";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DB: DendriteDatabase = { database: "dendrite", role: "dendrite", passwordFile: "/run/secrets/dendrite-db-password" };

function settings(args: string[]): Map<string, string> {
  assert.equal(args.length % 2, 0);
  const map = new Map<string, string>();
  for (let i = 0; i < args.length; i += 2) {
    assert.equal(args[i], "-c");
    const eq = args[i + 1].indexOf("=");
    assert.ok(eq > 0, args[i + 1]);
    const name = args[i + 1].slice(0, eq);
    assert.ok(!map.has(name), `duplicate ${name}`);
    map.set(name, args[i + 1].slice(eq + 1));
  }
  return map;
}

test("tuning for a 1 GiB node at the default share", () => {
  assert.deepEqual(postgresTuning(GiB), {
    sharedBuffersMb: 64,
    effectiveCacheSizeMb: 192,
    maintenanceWorkMemMb: 16,
    workMemMb: 2,
    maxConnections: 50,
    shmSizeBytes: 128 * MiB,
    memoryLimitBytes: 256 * MiB,
    memoryReservationBytes: 128 * MiB,
  });
});

test("tuning keeps its invariants from 512 MiB to 64 GiB and any share", () => {
  for (const nodeMb of [512, 1024, 2048, 4096, 8192, 16384, 65536]) {
    for (const share of [0.1, 0.25, 0.5, 1]) {
      const t = postgresTuning(nodeMb * MiB, share);
      const limitMb = t.memoryLimitBytes / MiB;
      const at = `${nodeMb} MiB x ${share}`;
      assert.equal(limitMb, Math.max(192, Math.floor(nodeMb * share)), at);
      assert.ok(t.memoryLimitBytes <= Math.max(nodeMb * MiB * share, 192 * MiB), at);
      assert.ok(t.memoryReservationBytes > 0 && t.memoryReservationBytes < t.memoryLimitBytes, at);
      assert.ok(t.sharedBuffersMb >= 32 && t.sharedBuffersMb <= limitMb * 0.26, at);
      assert.ok(t.effectiveCacheSizeMb > t.sharedBuffersMb && t.effectiveCacheSizeMb <= Math.max(96, limitMb * 0.75), at);
      assert.ok(t.maintenanceWorkMemMb >= 16 && t.maintenanceWorkMemMb <= Math.max(16, limitMb / 8), at);
      assert.ok(t.workMemMb >= 2 && t.workMemMb <= 64, at);
      assert.ok(t.maxConnections >= 50 && t.maxConnections <= 100, at);
      assert.ok(t.shmSizeBytes >= (t.sharedBuffersMb + 32) * MiB, at);
      for (const v of Object.values(t)) assert.ok(Number.isInteger(v) && v > 0, at);
    }
  }
  // More memory never means smaller settings.
  const small = postgresTuning(2 * GiB);
  const big = postgresTuning(16 * GiB);
  assert.ok(big.sharedBuffersMb > small.sharedBuffersMb && big.effectiveCacheSizeMb > small.effectiveCacheSizeMb);
  assert.ok(big.maxConnections >= small.maxConnections && big.workMemMb >= small.workMemMb);
  assert.equal(postgresTuning(16 * GiB).sharedBuffersMb, 1024);
});

test("tuning rejects impossible inputs", () => {
  assert.throws(() => postgresTuning(256 * MiB), /nodeMemoryBytes/);
  assert.throws(() => postgresTuning(Number.NaN), /nodeMemoryBytes/);
  assert.throws(() => postgresTuning(GiB, 0), /share/);
  assert.throws(() => postgresTuning(GiB, 1.5), /share/);
  assert.throws(() => postgresTuning(GiB, Number.NaN), /share/);
});

test("server args: every tuning value, SCRAM, stderr logging, no statement text in logs", () => {
  const t = postgresTuning(4 * GiB);
  const s = settings(postgresServerArgs(t));
  assert.equal(s.get("shared_buffers"), `${t.sharedBuffersMb}MB`);
  assert.equal(s.get("effective_cache_size"), `${t.effectiveCacheSizeMb}MB`);
  assert.equal(s.get("maintenance_work_mem"), `${t.maintenanceWorkMemMb}MB`);
  assert.equal(s.get("work_mem"), `${t.workMemMb}MB`);
  assert.equal(s.get("max_connections"), String(t.maxConnections));
  assert.equal(s.get("password_encryption"), "scram-sha-256");
  assert.equal(s.get("logging_collector"), "off");
  assert.equal(s.get("log_destination"), "stderr");
  assert.equal(s.get("log_statement"), "none");
  assert.equal(s.get("log_parameter_max_length"), "0");
  assert.equal(s.get("log_parameter_max_length_on_error"), "0");
  // The image adds listen_addresses for its temporary server; setting it here would fight that.
  assert.equal(s.has("listen_addresses"), false);
  assert.throws(() => postgresServerArgs({ ...t, workMemMb: 1.5 }), /workMemMb/);
  assert.throws(() => postgresServerArgs({ ...t, maxConnections: 0 }), /maxConnections/);
});

test("init script: POSIX sh with set -eu, reads the password file only through psql, quotes with psql", () => {
  const script = renderPostgresInitScript(DB);
  const lines = script.split("\n");
  assert.equal(lines[0], "#!/bin/sh");
  assert.ok(lines.includes("set -eu"));
  assert.ok(script.includes("pwfile='/run/secrets/dendrite-db-password'"));
  assert.ok(script.includes("\\set pw `cat :'pwfile'`"));
  assert.ok(script.includes("PASSWORD :'pw'"));
  // The shell never holds the password: no command substitution reading the file, no env hand-off.
  assert.doesNotMatch(script, /\$\(|`cat "?\$|PGPASSWORD|export /);
  // The SQL heredoc is quoted, so the shell expands nothing inside it.
  assert.ok(script.includes("<<'SQL'"));
  assert.match(script, /--username "\$POSTGRES_USER"/);
  assert.match(script, /CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;/);
  assert.match(script, /CREATE DATABASE :"db" OWNER :"role" TEMPLATE template0 ENCODING 'UTF8'/);
  assert.match(script, /LC_COLLATE 'C' LC_CTYPE 'C'/);
  assert.match(script, /REVOKE ALL ON DATABASE :"db" FROM PUBLIC;/);
  assert.match(script, /REVOKE ALL ON SCHEMA public FROM PUBLIC;/);
  assert.ok(script.includes(`>= ${MIN_PASSWORD_LENGTH}`));
  assert.ok(script.endsWith("\n"));
});

test("init script: names and paths that could escape quoting or collide are refused", () => {
  const bad: Partial<DendriteDatabase>[] = [
    { role: "Dendrite" },
    { role: "den'drite" },
    { role: 'den"drite' },
    { role: "1dendrite" },
    { role: "a".repeat(64) },
    { role: "postgres" },
    { role: "public" },
    { role: "pg_monitor" },
    { role: "" },
    { database: "template1" },
    { database: "dendrite db" },
    { database: "x;drop" },
    { passwordFile: "run/secrets/x" },
    { passwordFile: "/run/secrets/x'y" },
    { passwordFile: "/run/secrets/$(id)" },
    { passwordFile: "/run/secrets/../../etc/shadow" },
    { passwordFile: "/run/secrets/" },
    { passwordFile: "/run/secrets/a b" },
  ];
  for (const b of bad) assert.throws(() => renderPostgresInitScript({ ...DB, ...b }), /renderPostgresInitScript/, JSON.stringify(b));
  assert.doesNotThrow(() => renderPostgresInitScript({ database: "matrix_1", role: "a".repeat(63), passwordFile: "/run/secrets/db.pw" }));
});

const START = { role: "dendrite", passwordFile: "/run/secrets/dendrite-db-password", superuserPasswordFile: "/run/secrets/postgres-superuser-password" };
const shellcheck = findTool("shellcheck", "shellcheck");

test("start script: shellcheck finds nothing; it syncs only an existing data directory, socket-only, then execs the image's entrypoint", { skip: shellcheck ? false : skipReason("shellcheck", "shellcheck") }, () => {
  const text = renderPostgresStartScript(START);
  const r = spawnSync(shellcheck!, ["-s", "sh", "-"], { input: text, encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout);
  assert.match(text, /^#!\/bin\/sh\n(#.*\n)*set -eu\n/);
  assert.match(text, /if \[ -s "\$PGDATA\/PG_VERSION" \]; then\n  pg_ctl -D "\$PGDATA" -w -t 300 -o "-c listen_addresses= /);
  assert.match(text, /\nexec \/usr\/local\/bin\/docker-entrypoint\.sh "\$@"\n$/);
  // The files are read by psql's backquote, never put on a command line or in the environment.
  assert.doesNotMatch(text, /PGPASSWORD|\$\(cat/);
});

test("start script: names and paths that could escape quoting are refused", () => {
  assert.throws(() => renderPostgresStartScript({ ...START, role: "x'; DROP" }), /role/);
  assert.throws(() => renderPostgresStartScript({ ...START, passwordFile: "/run/secrets/a b" }), /passwordFile/);
  assert.throws(() => renderPostgresStartScript({ ...START, superuserPasswordFile: "../x" }), /superuserPasswordFile/);
  assert.throws(() => renderPostgresStartScript({ ...START, entrypoint: "/usr/local/bin/$(id)" }), /entrypoint/);
});

test("the postgres service starts through the start script, mounted executable for its user, with the server arguments after it", async () => {
  const plan = await planStack("local");
  assert.equal(plan.error, undefined, String(plan.error));
  const svc = named(plan, "postgres-service").inputs as Inputs;
  const c = svc.taskSpec.containerSpec;
  assert.deepEqual(c.commands, ["/usr/local/sbin/hm-postgres-start"]);
  assert.equal(c.args[0], "postgres");
  const mount = (c.configs as Inputs[]).find((m) => m.fileName === "/usr/local/sbin/hm-postgres-start");
  assert.ok(mount, "the start script is not mounted");
  assert.equal(mount.fileMode, 0o555);
  assert.equal(`${mount.fileUid}:${mount.fileGid}`, "70:70");
  const config = plan.resources.find((r) => r.type === "docker:index/serviceConfig:ServiceConfig" && r.id === mount.configId);
  assert.ok(config, "the mount names no planned config");
  assert.equal(plannedFile(plan, `${config.name}/hm-postgres-start`), renderPostgresStartScript(START));
});

test("a rotated password reaches Dendrite's config and the backup only after the Postgres service has converged with it", async () => {
  const plan = await planStack("local");
  assert.equal(plan.error, undefined, String(plan.error));
  const pg = named(plan, "postgres-service");
  const waits = (name: string): boolean => named(plan, name).options.dependsOn.includes(pg.urn);
  assert.ok(waits("dendrite-config"), "Dendrite's config secret does not wait for the Postgres service");
  const backupUsers = plan.resources.filter((r) => r.name.startsWith("backup") && r.options.dependsOn.includes(pg.urn));
  assert.ok(backupUsers.length > 0 || !plan.resources.some((r) => r.name.startsWith("backup")), "the backup takes the password without waiting for Postgres");
});

/**
 * Renderers for the official `postgres` image (PostgreSQL 15 or newer): the first-start script that creates
 * Dendrite's role and database, and the server settings sized from the node's memory.
 */

export interface DendriteDatabase {
  /** Database name: a lowercase SQL identifier. */
  database: string;
  /** Login role Dendrite connects as: a lowercase SQL identifier. */
  role: string;
  /** The role's password as a file inside the container, e.g. a Swarm secret under /run/secrets/. */
  passwordFile: string;
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;
// Names the image or PostgreSQL already use or reserve.
const RESERVED = new Set(["postgres", "public", "template0", "template1", "none", "current_user", "session_user", "current_role", "user", "all"]);
const SAFE_PATH = /^\/(?:[A-Za-z0-9_.-]+\/)*[A-Za-z0-9_.-]+$/;
/** The script refuses a shorter password (the program generates 40 characters). */
export const MIN_PASSWORD_LENGTH = 16;

function identifier(what: string, value: string): string {
  if (!IDENTIFIER.test(value)) {
    throw new Error(`renderPostgresInitScript: ${what} ${JSON.stringify(value)} must match ${IDENTIFIER} (a lowercase SQL identifier, at most 63 characters)`);
  }
  if (RESERVED.has(value) || value.startsWith("pg_")) {
    throw new Error(`renderPostgresInitScript: ${what} ${JSON.stringify(value)} is reserved by PostgreSQL or the image`);
  }
  return value;
}

/**
 * A script for /docker-entrypoint-initdb.d/. The entrypoint runs it (as the image's superuser, with
 * POSTGRES_USER, POSTGRES_DB and PGPASSWORD exported) once, on an empty data directory, against a
 * socket-only temporary server. Mount it executable so it runs in its own shell instead of being sourced.
 *
 * The password never passes through the shell, argv or the environment: psql reads the file itself
 * (a backquoted `cat` whose only argument is the path) and quotes it as a literal with :'pw'.
 */

/**
 * psql lines that read the file :pwfile into :pw with no statement that carries it reaching the
 * server log (not even when one fails), and refuse a short one. Shared by the init and start scripts.
 */
const READ_PASSWORD_SQL = `-- Statements carrying a password must never reach the server log, not even when one fails.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SET password_encryption = 'scram-sha-256';

\\set pw \`cat :'pwfile'\`
SELECT length(:'pw') >= ${MIN_PASSWORD_LENGTH} AS pw_long_enough \\gset
\\if :pw_long_enough
\\else
DO $$ BEGIN RAISE EXCEPTION 'the password file holds fewer than ${MIN_PASSWORD_LENGTH} characters'; END $$;
\\endif`;

export function renderPostgresInitScript(db: DendriteDatabase): string {
  const role = identifier("role", db.role);
  const database = identifier("database", db.database);
  if (!SAFE_PATH.test(db.passwordFile) || db.passwordFile.split("/").some((part) => part === "." || part === "..")) {
    throw new Error(`renderPostgresInitScript: passwordFile ${JSON.stringify(db.passwordFile)} must be an absolute path of [A-Za-z0-9_.-] segments`);
  }
  // The three values are validated above; single quotes cannot occur in them.
  return `#!/bin/sh
# Creates Dendrite's role and database. The postgres image runs this once, on an empty data directory.
set -eu

role='${role}'
db='${database}'
pwfile='${db.passwordFile}'

if [ ! -r "$pwfile" ] || [ ! -s "$pwfile" ]; then
  echo "$0: the password file $pwfile is missing, unreadable or empty" >&2
  exit 1
fi

psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --quiet \\
  --username "$POSTGRES_USER" --dbname "\${POSTGRES_DB:-$POSTGRES_USER}" \\
  --set role="$role" --set db="$db" --set pwfile="$pwfile" <<'SQL'
${READ_PASSWORD_SQL}

CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- A separate statement: CREATE ROLE can fail (name taken), ALTER right after it cannot.
ALTER ROLE :"role" PASSWORD :'pw';
\\unset pw

-- UTF8 as Dendrite requires; C collation sorts by bytes, so a libc change in the image never
-- silently invalidates text indexes (Dendrite relies on no locale-aware ordering).
CREATE DATABASE :"db" OWNER :"role" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER libc LC_COLLATE 'C' LC_CTYPE 'C';

-- Only the owner (and superusers) may connect to Dendrite's database; no other database accepts
-- new roles by default either.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', datname)
  FROM pg_database WHERE datname <> :'db' AND datallowconn \\gexec

\\connect :db
-- No rights in schema public for anyone but Dendrite, stated rather than left to version defaults.
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"role";
SQL

echo "$0: created role $role and database $db"
`;
}

export interface PasswordSync {
  /** The application's role and its password file (as for the init script). */
  role: string;
  passwordFile: string;
  /** The image superuser's password file (POSTGRES_PASSWORD_FILE); its role is $POSTGRES_USER (default postgres). */
  superuserPasswordFile: string;
  /** The image's entrypoint, handed the server command once the passwords are set. */
  entrypoint?: string;
}

function safePath(what: string, value: string): string {
  if (!SAFE_PATH.test(value) || value.split("/").some((part) => part === "." || part === "..")) {
    throw new Error(`renderPostgresStartScript: ${what} ${JSON.stringify(value)} must be an absolute path of [A-Za-z0-9_.-] segments`);
  }
  return value;
}

/**
 * The service's command: on every start with an existing data directory, sets each role's password
 * from its mounted secret file, then hands over to the image's entrypoint. The init script sets the
 * password only on an empty data directory (the entrypoint runs /docker-entrypoint-initdb.d/ only
 * then: docker-library/postgres 17/alpine3.22/docker-entrypoint.sh _main, DATABASE_ALREADY_EXISTS),
 * while the config Dendrite reads follows the generated password: a rotation would lock Dendrite
 * out. A changed Swarm secret restarts the task, so this runs on every rotation.
 *
 * It runs as the service's user against a temporary socket-only server (no TCP listener, as the
 * entrypoint's own docker_temp_server_start), so no client can connect before the passwords are in
 * step. The socket is trusted for local users (initdb's default, which the image keeps). A password
 * never passes through argv, the environment or a log: psql reads the file itself, and the session
 * logs no statement text, not even on error.
 */
export function renderPostgresStartScript(p: PasswordSync): string {
  const role = identifier("role", p.role);
  const appFile = safePath("passwordFile", p.passwordFile);
  const superFile = safePath("superuserPasswordFile", p.superuserPasswordFile);
  const entrypoint = safePath("entrypoint", p.entrypoint ?? "/usr/local/bin/docker-entrypoint.sh");
  return `#!/bin/sh
# Keeps the roles' passwords in step with the mounted secrets on every start, then starts PostgreSQL
# through the image's entrypoint. On an empty data directory the entrypoint's init does it instead.
set -eu

su="\${POSTGRES_USER:-postgres}"
socket="\${PGHOST:-/var/run/postgresql}"
port="\${PGPORT:-5432}"

sync_password() { # role, password file
  if [ ! -r "$2" ] || [ ! -s "$2" ]; then
    echo "$0: the password file $2 is missing, unreadable or empty" >&2
    return 1
  fi
  psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --quiet \\
    --host "$socket" --port "$port" --username "$su" --dbname postgres \\
    --set role="$1" --set pwfile="$2" <<'SQL'
${READ_PASSWORD_SQL}
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') AS role_exists \\gset
\\if :role_exists
ALTER ROLE :"role" PASSWORD :'pw';
\\else
DO $$ BEGIN RAISE EXCEPTION 'the role to set a password for does not exist'; END $$;
\\endif
\\unset pw
SQL
}

if [ -s "$PGDATA/PG_VERSION" ]; then
  pg_ctl -D "$PGDATA" -w -t 300 -o "-c listen_addresses= -c unix_socket_directories=$socket -p $port" start
  if sync_password "$su" '${superFile}' && sync_password '${role}' '${appFile}'; then
    pg_ctl -D "$PGDATA" -m fast -w -t 300 stop
    echo "$0: passwords of $su and ${role} set from their secrets"
  else
    pg_ctl -D "$PGDATA" -m fast -w -t 300 stop || true
    exit 1
  fi
fi
exec ${entrypoint} "$@"
`;
}

export interface PostgresTuning {
  sharedBuffersMb: number;
  effectiveCacheSizeMb: number;
  maintenanceWorkMemMb: number;
  workMemMb: number;
  maxConnections: number;
  /** Size of the tmpfs mounted at /dev/shm (Swarm has no --shm-size). */
  shmSizeBytes: number;
  memoryLimitBytes: number;
  memoryReservationBytes: number;
}

const MiB = 1024 * 1024;
const MIN_NODE_BYTES = 512 * MiB;
const MIN_POSTGRES_MB = 192;
const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/**
 * Settings sized from the node's memory and the share of it Postgres may use (PGTune's "web" profile,
 * scaled to the share, not to the whole node). With a memory limit, the page cache Postgres reads
 * through is charged to its own cgroup, so effective_cache_size is a fraction of the share too.
 * For a 1 GiB node at 0.25: 256 MiB limit, shared_buffers 64MB, 50 connections.
 */
export function postgresTuning(nodeMemoryBytes: number, share = 0.25): PostgresTuning {
  if (!Number.isFinite(nodeMemoryBytes) || nodeMemoryBytes < MIN_NODE_BYTES) {
    throw new Error(`postgresTuning: nodeMemoryBytes must be at least ${MIN_NODE_BYTES} (512 MiB), got ${nodeMemoryBytes}`);
  }
  if (!Number.isFinite(share) || share <= 0 || share > 1) {
    throw new Error(`postgresTuning: share must be in (0, 1], got ${share}`);
  }
  const budgetMb = Math.max(MIN_POSTGRES_MB, Math.floor((nodeMemoryBytes * share) / MiB));
  const sharedBuffersMb = clamp(Math.floor(budgetMb / 4), 32, 8192);
  const effectiveCacheSizeMb = Math.max(96, Math.floor((budgetMb * 3) / 4));
  const maintenanceWorkMemMb = clamp(Math.floor(budgetMb / 16), 16, 2048);
  // One pool in the Dendrite monolith; a backend with Dendrite's prepared statements costs a few MB.
  const maxConnections = clamp(Math.round(budgetMb / 8 / 10) * 10, 50, 100);
  // PGTune: (RAM - shared_buffers) / (3 * max_connections).
  const workMemMb = clamp(Math.floor((budgetMb - sharedBuffersMb) / (3 * maxConnections)), 2, 64);
  // The main buffer pool is anonymous shared memory; /dev/shm holds the dynamic segments (parallel
  // query). Sized generously: tmpfs only takes what is written.
  const shmSizeBytes = (sharedBuffersMb + 64) * MiB;
  const memoryLimitBytes = budgetMb * MiB;
  const memoryReservationBytes = Math.floor(budgetMb / 2) * MiB;
  return { sharedBuffersMb, effectiveCacheSizeMb, maintenanceWorkMemMb, workMemMb, maxConnections, shmSizeBytes, memoryLimitBytes, memoryReservationBytes };
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`postgresServerArgs: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** `-c name=value` pairs for the container command, after `postgres`. */
export function postgresServerArgs(t: PostgresTuning): string[] {
  const settings: [string, string][] = [
    ["max_connections", String(positiveInt("maxConnections", t.maxConnections))],
    ["shared_buffers", `${positiveInt("sharedBuffersMb", t.sharedBuffersMb)}MB`],
    ["effective_cache_size", `${positiveInt("effectiveCacheSizeMb", t.effectiveCacheSizeMb)}MB`],
    ["maintenance_work_mem", `${positiveInt("maintenanceWorkMemMb", t.maintenanceWorkMemMb)}MB`],
    ["work_mem", `${positiveInt("workMemMb", t.workMemMb)}MB`],
    // DigitalOcean volumes and local disks are SSDs.
    ["random_page_cost", "1.1"],
    ["effective_io_concurrency", "200"],
    ["password_encryption", "scram-sha-256"],
    // Logs go to the container's stderr (docker logs); no collector writing files in the data dir.
    ["logging_collector", "off"],
    ["log_destination", "stderr"],
    ["log_timezone", "UTC"],
    ["log_line_prefix", "%m [%p] %q%u@%d "],
    ["log_connections", "on"],
    ["log_lock_waits", "on"],
    ["log_temp_files", "10MB"],
    // Never log statement text routinely: DDL can carry passwords. Slow statements are logged without
    // their bind parameters, which hold user data and tokens.
    ["log_statement", "none"],
    ["log_min_duration_statement", "2s"],
    ["log_parameter_max_length", "0"],
    ["log_parameter_max_length_on_error", "0"],
  ];
  return settings.flatMap(([name, value]) => ["-c", `${name}=${value}`]);
}

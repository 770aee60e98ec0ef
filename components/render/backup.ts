/**
 * Renderers for the backup of Dendrite's database and media store into a restic repository.
 *
 * Two containers cooperate, because restic and pg_dump live in different official images and no
 * pinned image has both: restic/restic ships only /usr/bin/restic on Alpine (restic/restic
 * docker/Dockerfile.release: `COPY --from=helper /output/restic /usr/bin`, `apk add ca-certificates
 * fuse openssh-client tzdata jq`), and postgres:17-alpine ships pg_dump 17 but no restic.
 *
 * - the backup side (restic image) runs the schedule: media straight from a read-only mount, then
 *   the database from a FIFO in a spool both containers share;
 * - the dump side (the postgres image the server runs, so pg_dump's major version is the server's)
 *   waits for a request in the spool and writes `pg_dump` into the FIFO.
 * pg_dump takes one snapshot for the whole dump (PostgreSQL docs, app-pgdump: "consistent backups
 * even if the database is being used concurrently"); the stream never touches a disk in plain text.
 *
 * restic reads its repository, password and S3 credentials from the environment:
 * RESTIC_REPOSITORY, RESTIC_PASSWORD_FILE, AWS_SHARED_CREDENTIALS_FILE (restic
 * internal/backend/s3/s3.go getCredentials chains minio-go's FileAWSCredentials, which reads that
 * file: minio/minio-go pkg/credentials/file_aws_credentials.go). Encryption is always on in restic.
 *
 * Every script is POSIX sh for busybox ash (both images are Alpine) and dash (the drill), and
 * passes shellcheck.
 */

export interface Retention {
  daily: number;
  weekly: number;
  monthly: number;
}

export interface BackupScriptParams {
  /** restic's --host for every snapshot: stable across tasks (a task's hostname is its container id). */
  host: string;
  /** Directory shared with the dump side: the FIFO and the request/answer files. */
  spoolDir: string;
  /** This side's private scratch: restic's JSON output and the health markers. */
  stateDir: string;
  /** Dendrite's media store, mounted read-only. */
  mediaDir: string;
  intervalSeconds: number;
  /** Next attempt after a failed run. */
  retrySeconds: number;
  retention: Retention;
  /** Upper bound for one database dump. */
  dumpTimeoutSeconds: number;
  /** How long to wait for the dump side to take a request. */
  answerTimeoutSeconds: number;
}

export interface DumpScriptParams {
  spoolDir: string;
  stateDir: string;
  database: { host: string; port: number; name: string; user: string };
  dumpTimeoutSeconds: number;
}

export interface RestoreScriptParams {
  host: string;
  mediaDir: string;
}

/** The file name the database dump has inside its snapshots. */
export const DUMP_FILE = "dendrite.sql";
export const TAG_DATABASE = "postgres";
export const TAG_MEDIA = "media";

const SAFE_PATH = /^\/(?:[A-Za-z0-9_.-]+\/)*[A-Za-z0-9_.-]+$/;
const SAFE_WORD = /^[A-Za-z0-9_.-]+$/;

function path(what: string, value: string): string {
  if (!SAFE_PATH.test(value) || value.split("/").some((p) => p === "." || p === "..")) {
    throw new Error(`backup renderer: ${what} ${JSON.stringify(value)} must be an absolute path of [A-Za-z0-9_.-] segments`);
  }
  return value;
}

function word(what: string, value: string): string {
  if (!SAFE_WORD.test(value)) throw new Error(`backup renderer: ${what} ${JSON.stringify(value)} must match ${SAFE_WORD}`);
  return value;
}

function count(what: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new Error(`backup renderer: ${what} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** `restic forget` arguments for the retention policy; a 0 keeps none of that kind. */
export function retentionArgs(r: Retention): string[] {
  count("retention.daily", r.daily, 1);
  count("retention.weekly", r.weekly, 0);
  count("retention.monthly", r.monthly, 0);
  const args = ["--keep-daily", String(r.daily)];
  if (r.weekly > 0) args.push("--keep-weekly", String(r.weekly));
  if (r.monthly > 0) args.push("--keep-monthly", String(r.monthly));
  return args;
}

const LOG = `log() { printf '%s %s: %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$prog" "$*" >&2; }`;

/**
 * The backup side's script: `backup.sh` runs forever on the schedule, `backup.sh once` runs once
 * and exits with its status. A run succeeds only if the media backup, the database dump (pg_dump's
 * own exit status, reported by the dump side), retention and `restic check` all succeed; only then
 * is `last-success` written, which the healthcheck reads.
 */
export function renderBackupScript(p: BackupScriptParams): string {
  const spool = path("spoolDir", p.spoolDir);
  const state = path("stateDir", p.stateDir);
  const media = path("mediaDir", p.mediaDir);
  const host = word("host", p.host);
  const keep = retentionArgs(p.retention).join(" ");
  return `#!/bin/sh
# Backs up Dendrite's media store and database into the restic repository in RESTIC_REPOSITORY
# (password in RESTIC_PASSWORD_FILE, S3 keys in AWS_SHARED_CREDENTIALS_FILE), then applies the
# retention policy and checks the repository. Usage: backup.sh [once]
set -eu

prog=backup
spool='${spool}'
state='${state}'
media='${media}'
host='${host}'
interval=${count("intervalSeconds", p.intervalSeconds, 60)}
retry=${count("retrySeconds", p.retrySeconds, 1)}
dump_timeout=${count("dumpTimeoutSeconds", p.dumpTimeoutSeconds, 1)}
answer_timeout=${count("answerTimeoutSeconds", p.answerTimeoutSeconds, 1)}

${LOG}

# The last summary line of \`restic backup --json\` (restic internal/ui/backup/json.go summaryOutput).
summary_of() { grep '"message_type":"summary"' "$1" | tail -n 1; }
snapshot_of() { summary_of "$1" | sed -n 's/.*"snapshot_id":"\\([0-9a-f]*\\)".*/\\1/p'; }

# Opens the repository, creating it on first use. A wrong password is an error, never a new repository.
ensure_repository() {
  if restic cat config >/dev/null 2>"$state/probe.err"; then
    return 0
  fi
  if grep -qi 'wrong password' "$state/probe.err"; then
    log "the repository password (RESTIC_PASSWORD_FILE) does not open $RESTIC_REPOSITORY"
    cat "$state/probe.err" >&2
    return 1
  fi
  log "no repository at $RESTIC_REPOSITORY yet: creating it"
  cat "$state/probe.err" >&2
  restic init >&2 || return 1
}

backup_media() {
  log "media: backing up $media"
  # Backing up "." stores the files at the snapshot's root, so a restore lands in any target as is.
  if ! (cd "$media" && restic backup --json --host "$host" --tag ${TAG_MEDIA} .) >"$state/media.json"; then
    log "media: restic backup failed"
    return 1
  fi
  log "media: $(summary_of "$state/media.json")"
}

backup_database() {
  rm -f "$spool/request" "$spool/accepted" "$spool/status" "$spool/status.tmp" "$spool/dump.fifo"
  mkfifo -m 600 "$spool/dump.fifo" || return 1
  date -u +%s >"$spool/request"
  waited=0
  while [ ! -e "$spool/accepted" ]; do
    if [ "$waited" -ge "$answer_timeout" ]; then
      log "database: the dump service did not take the request within \${answer_timeout}s"
      rm -f "$spool/request"
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "database: streaming pg_dump into restic"
  rc=0
  # The redirection happens inside the timeout, so a dump side that never opens the FIFO cannot hang us.
  # shellcheck disable=SC2016
  timeout "$dump_timeout" sh -c 'exec restic backup --json --host "$1" --tag ${TAG_DATABASE} --stdin --stdin-filename ${DUMP_FILE} <"$2"' \\
    sh "$host" "$spool/dump.fifo" >"$state/database.json" || rc=$?
  if [ "$rc" -ne 0 ] && [ ! -e "$spool/status" ]; then
    # restic may have failed before opening the FIFO: open it so pg_dump is not left waiting.
    timeout 10 cat "$spool/dump.fifo" >/dev/null 2>&1 || true
  fi
  waited=0
  while [ ! -e "$spool/status" ] && [ "$waited" -lt 60 ]; do
    sleep 1
    waited=$((waited + 1))
  done
  dump_rc=$(cat "$spool/status" 2>/dev/null || echo none)
  snapshot=$(snapshot_of "$state/database.json")
  if [ "$rc" -ne 0 ] || [ "$dump_rc" != 0 ]; then
    log "database: FAILED (restic exit $rc, pg_dump exit $dump_rc)"
    if [ -n "$snapshot" ]; then
      # A truncated dump must never pass for a backup.
      log "database: forgetting the incomplete snapshot $snapshot"
      restic forget "$snapshot" >&2 || true
    fi
    return 1
  fi
  log "database: $(summary_of "$state/database.json")"
}

run_once() {
  ensure_repository || return 1
  # The database first, and both always tried: a media failure must not cost the database its backup.
  failed=0
  backup_database || failed=1
  backup_media || failed=1
  [ "$failed" = 0 ] || return 1
  log "retention: ${keep}"
  restic forget --host "$host" ${keep} --prune >&2 || { log "retention: restic forget --prune failed"; return 1; }
  restic check >&2 || { log "restic check FAILED: the repository needs attention"; return 1; }
  date -u +%s >"$state/last-success"
  log "backup complete"
}

date -u +%s >"$state/started"
if [ "\${1:-}" = once ]; then
  run_once
  exit $?
fi
while :; do
  begin=$(date -u +%s)
  if run_once; then
    next=$((begin + interval))
  else
    log "BACKUP FAILED; next attempt in \${retry}s"
    next=$((begin + retry))
  fi
  now=$(date -u +%s)
  if [ "$next" -gt "$now" ]; then
    sleep $((next - now))
  fi
done
`;
}

/**
 * The dump side's script: waits for a request in the spool and streams `pg_dump` into the FIFO,
 * then reports pg_dump's exit status. `dump.sh once` serves one request and exits with its status.
 * The password comes from PGPASSFILE (a Swarm secret); --no-password makes a missing one an error.
 */
export function renderDumpScript(p: DumpScriptParams): string {
  const spool = path("spoolDir", p.spoolDir);
  const state = path("stateDir", p.stateDir);
  const db = p.database;
  return `#!/bin/sh
# Streams a consistent logical dump of Dendrite's database into the backup side's FIFO on request.
# Usage: dump.sh [once]
set -eu

prog=dump
spool='${spool}'
state='${state}'
dump_timeout=${count("dumpTimeoutSeconds", p.dumpTimeoutSeconds, 1)}

${LOG}

serve() {
  rm -f "$spool/request"
  : >"$spool/accepted"
  log "dumping database ${word("database", db.name)}"
  rc=0
  # pg_dump opens the FIFO itself, inside the timeout. Plain SQL: restic deduplicates it well and any psql restores it.
  timeout "$dump_timeout" pg_dump --host='${word("host", db.host)}' --port=${count("port", db.port, 1)} --username='${word("user", db.user)}' \\
    --dbname='${db.name}' --no-password --format=plain --no-owner --no-privileges --file="$spool/dump.fifo" || rc=$?
  if [ "$rc" -ne 0 ]; then
    # pg_dump may have failed before opening the FIFO: open it once so the reader gets its end of file.
    # shellcheck disable=SC2016
    timeout 10 sh -c ': >"$1"' sh "$spool/dump.fifo" 2>/dev/null || true
  fi
  echo "$rc" >"$spool/status.tmp"
  mv "$spool/status.tmp" "$spool/status"
  log "pg_dump exited $rc"
  return "$rc"
}

while :; do
  date -u +%s >"$state/heartbeat"
  if [ -e "$spool/request" ] && [ -p "$spool/dump.fifo" ]; then
    rc=0
    serve || rc=$?
    if [ "\${1:-}" = once ]; then
      exit "$rc"
    fi
  fi
  sleep 1
done
`;
}

/**
 * Healthcheck: healthy while \`file\` was written less than maxAgeSeconds ago. Before \`file\` exists,
 * \`fallback\` (the start time) counts, so a first run gets the same time as any other.
 */
export function renderFreshnessCheck(file: string, fallback: string, maxAgeSeconds: number, what: string): string {
  return `#!/bin/sh
# Fails when ${what} is older than ${count("maxAgeSeconds", maxAgeSeconds, 1)}s.
set -eu
last=$(cat '${path("file", file)}' 2>/dev/null || cat '${path("fallback", fallback)}' 2>/dev/null || echo 0)
age=$(($(date -u +%s) - last))
if [ "$age" -gt ${maxAgeSeconds} ]; then
  echo "${what}: last at $last, \${age}s ago; allowed: ${maxAgeSeconds}s" >&2
  exit 1
fi
echo "${what}: \${age}s ago"
`;
}

/**
 * The restore: the latest (or a chosen) database snapshot into an empty database and the latest (or
 * a chosen) media snapshot into an empty media directory. It needs restic and psql (the server's
 * major version) on PATH, the restic variables of the backup, and libpq's PG* variables / PGPASSFILE
 * for the database. `--wipe` empties both first (DROP OWNED BY the restoring role; the media files).
 */
export function renderRestoreScript(p: RestoreScriptParams): string {
  const media = path("mediaDir", p.mediaDir);
  const host = word("host", p.host);
  return `#!/bin/sh
# Restores Dendrite's database and media store from the restic repository in RESTIC_REPOSITORY.
# Usage: restore.sh [--wipe] [--media DIR] [--db-snapshot ID] [--media-snapshot ID]   (default: the latest of each)
# The database comes from libpq's PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSFILE (or PGOPTIONS=-c role=...).
set -eu

prog=restore
media='${media}'
host='${host}'
wipe=no
db_snapshot=latest
media_snapshot=latest

${LOG}
die() { log "$*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --wipe) wipe=yes ;;
    --media) media=$2; shift ;;
    --db-snapshot) db_snapshot=$2; shift ;;
    --media-snapshot) media_snapshot=$2; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done

umask 077
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT INT TERM

# Fails first, and clearly, on a wrong password or an unreachable repository.
restic cat config >/dev/null || die "cannot open the repository $RESTIC_REPOSITORY (see restic's message above)"

psql_q() { psql -X -q -A -t -w -v ON_ERROR_STOP=1 "$@"; }

objects=$(psql_q -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'") ||
  die "cannot connect to the database (PGHOST, PGDATABASE, PGUSER, PGPASSFILE)"
if [ "$objects" != 0 ]; then
  [ "$wipe" = yes ] || die "the database already holds $objects objects; restore into an empty database or pass --wipe"
  log "database: dropping everything the restoring role owns"
  psql_q -c 'DROP OWNED BY CURRENT_USER' || die "could not empty the database"
fi
[ -d "$media" ] || die "the media directory $media does not exist"
if [ -n "$(ls -A "$media")" ]; then
  [ "$wipe" = yes ] || die "the media directory $media is not empty; restore into an empty one or pass --wipe"
  log "media: emptying $media"
  find "$media" -mindepth 1 -delete
fi

log "database: fetching snapshot $db_snapshot"
restic dump --host "$host" --tag ${TAG_DATABASE} "$db_snapshot" /${DUMP_FILE} >"$scratch/${DUMP_FILE}" || die "restic dump failed"
# pg_dump ends every complete plain dump with this line: a truncated dump is refused.
tail -n 5 "$scratch/${DUMP_FILE}" | grep -q '^-- PostgreSQL database dump complete' || die "the dump in snapshot $db_snapshot is incomplete"
log "database: restoring ($(wc -c <"$scratch/${DUMP_FILE}") bytes of SQL) in one transaction"
# From stdin, so psql may also run in another container (docker exec -i).
psql_q --single-transaction -f - <"$scratch/${DUMP_FILE}" >/dev/null || die "psql failed; nothing was committed"
rm -f "$scratch/${DUMP_FILE}"

log "media: restoring snapshot $media_snapshot into $media"
restic restore --host "$host" --tag ${TAG_MEDIA} "$media_snapshot" --target "$media" >&2 || die "restic restore failed"
log "restore complete"
`;
}

function pgpassField(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/:/g, "\\:");
}

/** A libpq password file (PostgreSQL docs, libpq-pgpass: ':' and '\\' escaped with '\\'). */
export function renderPgpass(db: { host: string; port: number; name: string; user: string; password: string }): string {
  if (/[\r\n]/.test(db.password)) throw new Error("renderPgpass: the password must be one line");
  return `${[db.host, String(db.port), db.name, db.user, db.password].map(pgpassField).join(":")}\n`;
}

/** An AWS shared credentials file (the profile "default"), read by restic through minio-go. */
export function renderS3Credentials(accessKeyId: string, secretAccessKey: string): string {
  for (const [what, v] of [["accessKeyId", accessKeyId], ["secretAccessKey", secretAccessKey]] as const) {
    if (v === "" || /[\s\r\n]/.test(v)) throw new Error(`renderS3Credentials: ${what} must be one non-empty word`);
  }
  return `[default]\naws_access_key_id = ${accessKeyId}\naws_secret_access_key = ${secretAccessKey}\n`;
}

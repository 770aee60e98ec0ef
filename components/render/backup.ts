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
// The healthchecks read these files at any moment: \`date >file\` would show them an empty file
// between the truncation and the write; a rename replaces it whole.
const STAMP = `stamp() { date -u +%s >"$1.tmp" && mv -f "$1.tmp" "$1"; }`;

/**
 * The backup side's script: `backup.sh` runs forever on the schedule, `backup.sh once` runs once
 * and exits with its status. A run succeeds only if the media backup (a media store that does not
 * exist yet, or is empty, has nothing to back up), the database dump (pg_dump's own exit status,
 * reported by the dump side), retention and `restic check` all succeed; only then is `last-success`
 * written, which the healthcheck reads. Retention and the check run even when one kind failed.
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
${STAMP}

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
  # Dendrite creates its media base_path on the first upload (element-hq/dendrite v0.15.2
  # mediaapi/fileutils/fileutils.go: os.MkdirAll in moveFile and createTempDir), and restic refuses
  # an empty snapshot (restic internal/archiver/archiver.go: "snapshot is empty"): a missing or
  # empty store has nothing to back up. Unless the repository already holds media: then the store
  # was lost or is not mounted, and a run that called that a success would hide it.
  if [ -d "$media" ]; then
    entries=$(ls -A "$media") || { log "media: cannot read $media"; return 1; }
  else
    entries=
  fi
  if [ -z "$entries" ]; then
    known=$(restic snapshots --json --host "$host" --tag ${TAG_MEDIA}) || { log "media: cannot list the media snapshots"; return 1; }
    if printf '%s' "$known" | grep -q '"id":"'; then
      log "media: $media is missing or empty but the repository holds media snapshots: Dendrite's storage is not mounted or its media are lost (see the README's restore); nothing backed up"
      return 1
    fi
    log "media: $media is missing or empty (no upload yet): nothing to back up"
    return 0
  fi
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
  done_tags=
  if backup_database; then done_tags="$done_tags --tag ${TAG_DATABASE}"; else failed=1; fi
  if backup_media; then done_tags="$done_tags --tag ${TAG_MEDIA}"; else failed=1; fi
  # Retention for each kind that has a new good snapshot (repeated --tag: either kind, restic
  # internal/data/snapshot.go HasTagList), so retries of a failing run do not pile up snapshots
  # of the other kind, and a kind that fails keeps every snapshot it has.
  if [ -n "$done_tags" ]; then
    log "retention:$done_tags ${keep}"
    # shellcheck disable=SC2086
    restic forget --host "$host" $done_tags ${keep} --prune >&2 || { log "retention: restic forget --prune failed"; failed=1; }
  fi
  restic check >&2 || { log "restic check FAILED: the repository needs attention"; failed=1; }
  [ "$failed" = 0 ] || return 1
  stamp "$state/last-success"
  log "backup complete"
}

stamp "$state/started"
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
${STAMP}

# The healthcheck reads the heartbeat, and a dump (with restic's upload at the other end of the FIFO)
# can take hours: while pg_dump runs, a helper keeps the heartbeat fresh, until the dump's own time
# limit (and a margin) has passed, so a dump stuck past it is no longer vouched for.
keep_beating() {
  deadline=$1
  while [ -e "$state/dumping" ] && [ "$(date -u +%s)" -le "$deadline" ]; do
    stamp "$state/heartbeat"
    sleep 1
  done
}

serve() {
  rm -f "$spool/request"
  : >"$spool/accepted"
  log "dumping database ${word("database", db.name)}"
  : >"$state/dumping"
  keep_beating $(($(date -u +%s) + dump_timeout + 30)) &
  beating=$!
  rc=0
  # pg_dump opens the FIFO itself, inside the timeout. Plain SQL: restic deduplicates it well and any psql restores it.
  timeout "$dump_timeout" pg_dump --host='${word("host", db.host)}' --port=${count("port", db.port, 1)} --username='${word("user", db.user)}' \\
    --dbname='${db.name}' --no-password --format=plain --no-owner --no-privileges --file="$spool/dump.fifo" || rc=$?
  rm -f "$state/dumping"
  wait "$beating" || true
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
  stamp "$state/heartbeat"
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
 * for the database. `--wipe` replaces what is there.
 *
 * Nothing live is touched before both snapshots are fetched and verified: the snapshots are resolved
 * among this host's snapshots of the right kind (a mistyped id, or a media id given for the database,
 * stops here), the dump is fetched to a private scratch directory and must be complete, and the media
 * are restored (and verified) into a staging directory beside the media directory. Only then is the
 * database replaced, in one transaction with the wipe (a dump that fails half-way commits nothing and
 * drops nothing), and then the media directory's content is swapped for the staged files.
 */
export function renderRestoreScript(p: RestoreScriptParams): string {
  const media = path("mediaDir", p.mediaDir);
  const host = word("host", p.host);
  return `#!/bin/sh
# Restores Dendrite's database and media store from the restic repository in RESTIC_REPOSITORY.
# Usage: restore.sh [--wipe] [--media DIR] [--db-snapshot ID] [--media-snapshot ID]   (default: the latest of each)
# The database comes from libpq's PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSFILE (or PGOPTIONS=-c role=...).
# The dump is staged in a private directory under TMPDIR (default /tmp), the media beside DIR.
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
    --media | --db-snapshot | --media-snapshot)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --media) media=$2 ;;
        --db-snapshot) db_snapshot=$2 ;;
        --media-snapshot) media_snapshot=$2 ;;
      esac
      shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
for id in "$db_snapshot" "$media_snapshot"; do
  case "$id" in
    latest) ;;
    '' | *[!0-9a-f]*) die "snapshot id $id: expected latest or a hexadecimal id (restic snapshots lists them)" ;;
  esac
done
while [ "\${media%/}" != "$media" ]; do media=\${media%/}; done
case "$media" in
  /?*) ;;
  *) die "--media $media: expected an absolute directory" ;;
esac
media_parent=$(dirname "$media")
[ -d "$media_parent" ] || die "$media_parent does not exist: is Dendrite's storage mounted?"

umask 077
scratch=$(mktemp -d)
stage=
cleanup() {
  rm -rf "$scratch"
  if [ -n "$stage" ]; then rm -rf "$stage"; fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# Fails first, and clearly, on a wrong password or an unreachable repository.
restic cat config >/dev/null || die "cannot open the repository $RESTIC_REPOSITORY (see restic's message above)"

psql_q() { psql -X -q -A -t -w -v ON_ERROR_STOP=1 "$@"; }

objects=$(psql_q -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'") ||
  die "cannot connect to the database (PGHOST, PGDATABASE, PGUSER, PGPASSFILE)"
if [ "$objects" != 0 ] && [ "$wipe" != yes ]; then
  die "the database already holds $objects objects; restore into an empty database or pass --wipe"
fi
if [ -d "$media" ] && [ -n "$(ls -A "$media")" ] && [ "$wipe" != yes ]; then
  die "the media directory $media is not empty; restore into an empty one or pass --wipe"
fi

# The full id of this host's snapshot of one kind: the newest for "latest" (restic snapshots lists
# the oldest first: cmd/restic/cmd_snapshots.go), else the one whose id starts with the given id.
# Prints nothing if there is none. Explicit ids make restic ignore --host and --tag, so we filter.
resolve() {
  restic snapshots --json --host "$host" --tag "$1" >"$scratch/snapshots.json" || return 1
  grep -o '"id":"[0-9a-f]*"' "$scratch/snapshots.json" | cut -d '"' -f 4 >"$scratch/ids" || true
  if [ "$2" = latest ]; then
    tail -n 1 "$scratch/ids"
  else
    matches=$(grep -c "^$2" "$scratch/ids" || true)
    [ "$matches" -le 1 ] || { log "$2 is the start of $matches $1 snapshot ids: give more of it"; return 1; }
    grep "^$2" "$scratch/ids" || true
  fi
}

db_id=$(resolve ${TAG_DATABASE} "$db_snapshot") || die "cannot list the database snapshots"
[ -n "$db_id" ] || die "no database snapshot $db_snapshot of host $host in the repository (restic snapshots --tag ${TAG_DATABASE} lists them); nothing was changed"
media_id=$(resolve ${TAG_MEDIA} "$media_snapshot") || die "cannot list the media snapshots"
if [ -z "$media_id" ] && [ "$media_snapshot" != latest ]; then
  die "no media snapshot $media_snapshot of host $host in the repository (restic snapshots --tag ${TAG_MEDIA} lists them); nothing was changed"
fi

log "database: fetching snapshot $db_id"
restic dump "$db_id" /${DUMP_FILE} >"$scratch/${DUMP_FILE}" || die "restic dump failed; nothing was changed"
# pg_dump ends every complete plain dump with this line: a truncated dump is refused.
tail -n 5 "$scratch/${DUMP_FILE}" | grep -q '^-- PostgreSQL database dump complete' ||
  die "the dump in snapshot $db_id is incomplete; nothing was changed"

if [ -n "$media_id" ]; then
  # Beside the media directory: the same filesystem, so the swap below is a rename.
  stage=$(mktemp -d "$media_parent/.$(basename "$media").restore.XXXXXX") || die "cannot create a staging directory in $media_parent"
  log "media: fetching snapshot $media_id into $stage"
  restic restore "$media_id" --target "$stage" --verify >&2 || die "restic restore failed; nothing was changed"
else
  # Backups skip a media store that does not exist yet: the server had no media.
  log "media: the repository holds no media snapshot of host $host: the server had no media"
fi

# From stdin, so psql may also run in another container (docker exec -i). --single-transaction
# wraps every -c and -f in one BEGIN/COMMIT (PostgreSQL docs, app-psql), the wipe included.
set -- --single-transaction
if [ "$objects" != 0 ]; then
  log "database: dropping everything the restoring role owns, in the restore's transaction"
  set -- "$@" -c 'DROP OWNED BY CURRENT_USER'
fi
log "database: restoring ($(wc -c <"$scratch/${DUMP_FILE}") bytes of SQL) in one transaction"
psql_q "$@" -f - <"$scratch/${DUMP_FILE}" >/dev/null || die "psql failed; nothing was committed, the database is as it was"
rm -f "$scratch/${DUMP_FILE}"

if [ ! -d "$media" ]; then
  # As Dendrite would make it on its first upload (os.MkdirAll 0770 under umask 022), owned as its storage.
  mkdir -m 0750 "$media" || die "cannot create $media"
  chown "$(stat -c %u:%g "$media_parent")" "$media" || die "cannot give $media its parent's owner"
fi
if [ "$wipe" = yes ] && [ -n "$(ls -A "$media")" ]; then
  log "media: emptying $media"
  find "$media" -mindepth 1 -delete
fi
if [ -n "$stage" ]; then
  log "media: moving the restored files into $media"
  find "$stage" -mindepth 1 -maxdepth 1 -exec mv -- {} "$media"/ \\;
fi
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

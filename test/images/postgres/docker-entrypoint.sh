#!/bin/bash
# The stand-in's entrypoint: the behaviour of docker-library/postgres docker-entrypoint.sh (17)
# that components/services/postgres.ts and components/render/postgres.ts rely on, written anew:
#  - POSTGRES_PASSWORD / POSTGRES_USER / POSTGRES_DB / POSTGRES_INITDB_ARGS, each also as *_FILE;
#    POSTGRES_USER defaults to postgres, POSTGRES_DB to POSTGRES_USER;
#  - a first argument starting with "-" means `postgres ARGS`;
#  - for `postgres`: creates $PGDATA (mode 0700) and the socket directory; started as root, it
#    chowns them and re-executes itself as postgres (upstream: gosu; here util-linux's setpriv);
#  - on a directory without PG_VERSION: initdb with the superuser's password, a `host all all all
#    scram-sha-256` line in pg_hba.conf (POSTGRES_HOST_AUTH_METHOD), a socket-only temporary server,
#    POSTGRES_DB created unless it is "postgres", /docker-entrypoint-initdb.d/ run in name order
#    (*.sh executable: run, else sourced; *.sql, *.sql.gz: psql) with POSTGRES_USER, POSTGRES_DB,
#    POSTGRES_PASSWORD and PGPASSWORD exported, then the temporary server stopped;
#  - an existing data directory is left alone (no init scripts), then `exec "$@"`.
# Not reproduced (the program uses none of them): POSTGRES_INITDB_WALDIR, nss_wrapper for uids
# without a passwd entry, *.sql.xz/*.sql.zst, POSTGRES_HOST_AUTH_METHOD=trust warnings' wording.
set -Eeuo pipefail

file_env() { # VAR [DEFAULT]: VAR or the contents of VAR_FILE, never both
  local var=$1 fileVar="${1}_FILE" def="${2:-}" val
  if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
    echo >&2 "error: both $var and $fileVar are set (but are exclusive)"; exit 1
  fi
  val=$def
  if [ -n "${!var:-}" ]; then val=${!var}; elif [ -n "${!fileVar:-}" ]; then val=$(<"${!fileVar}"); fi
  export "$var"="$val"
  unset "$fileVar"
}

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

if [ "$1" != postgres ]; then exec "$@"; fi

mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" 2>/dev/null || true
mkdir -p /var/run/postgresql
chmod 03775 /var/run/postgresql 2>/dev/null || true

if [ "$(id -u)" = 0 ]; then
  find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
  find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

file_env POSTGRES_PASSWORD
file_env POSTGRES_USER postgres
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

psql_run() { # psql as the superuser on the temporary server's socket
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo >&2 'error: the database is uninitialized and the superuser password is not set (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE)'
    exit 1
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of arguments, as upstream.
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -w \
    -o "-c listen_addresses='' -p ${PGPORT:-5432}" start
  if [ "$POSTGRES_DB" != postgres ]; then
    exists=$(psql_run --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    [ -n "${exists//[[:space:]]/}" ] || psql_run --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi
  export POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; # shellcheck source=/dev/null
          . "$f"; fi ;;
      *.sql) echo "$0: running $f"; psql_run --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | psql_run --dbname "$POSTGRES_DB" ;;
      *) [ ! -e "$f" ] || echo "$0: ignoring $f" ;;
    esac
  done
  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo "$0: PostgreSQL init process complete; ready for start up."
else
  echo "$0: PostgreSQL Database directory appears to contain a database; Skipping initialization"
fi

exec "$@"

#!/usr/bin/env bash
# Generates a small, real pgBackRest repository for cbob's tests.
#
#   scripts/gen-fixture.sh OUT_DIR
#
# Writes OUT_DIR/repo (the repository: stanza $STANZA, full + diff + incr backups and WAL
# archived after the last backup) and OUT_DIR/values.env (what a restore of the latest backup
# with the whole archive must find). `cargo xtask fixture` runs this, then packs the result
# into tests/fixtures/. Recipe and reasons: shared/reference/pgbackrest-lab.md §3.
#
# Needs Debian's pgbackrest (2.45) and PostgreSQL 15. PostgreSQL refuses root, so as root
# every PostgreSQL/pgBackRest program runs as the `postgres` user via runuser; as any other
# user they run as that user.
set -euo pipefail

OUT=${1:?usage: gen-fixture.sh OUT_DIR}
STANZA=${STANZA:-abc123}
SCALE=${SCALE:-1}
PGVER=${PGVER:-15}
PGBIN=/usr/lib/postgresql/$PGVER/bin
PORT=55432

log() { printf '[gen-fixture %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'gen-fixture: error: %s\n' "$*" >&2; exit 1; }

command -v pgbackrest >/dev/null || die "pgbackrest not found: apt-get install -y pgbackrest"
[[ -x $PGBIN/initdb ]] || die "PostgreSQL $PGVER not found at $PGBIN: apt-get install -y postgresql-$PGVER"
command -v openssl >/dev/null || die "openssl not found: apt-get install -y openssl"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[[ -e $OUT/repo ]] && die "$OUT/repo already exists; give an empty directory"
W=$OUT/gen
C=$W/pgbackrest.conf
REPO=$OUT/repo

if [[ $(id -u) == 0 ]]; then
    PGUSER_OS=postgres
    id "$PGUSER_OS" >/dev/null 2>&1 || die "no postgres user: apt-get install -y postgresql-$PGVER"
    run_as() { runuser -u "$PGUSER_OS" -- "$@"; }
else
    PGUSER_OS=$(id -un)
    run_as() { "$@"; }
fi
# Clean environment, readable cwd (reference/pgbackrest-lab.md §2).
as_pg() {
    (cd "$W" && run_as env -i PATH="$PGBIN:/usr/bin:/bin" HOME="$W" LANG=C.UTF-8 \
        PGHOST="$W/sock" PGPORT=$PORT PGUSER=postgres "$@")
}
pgb() { as_pg pgbackrest --config="$C" --stanza="$STANZA" "$@"; }
sql() { as_pg psql -X -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
val() { as_pg psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

cleanup() {
    if [[ -f $W/pg/postmaster.pid ]]; then
        log "stopping the generator's PostgreSQL"
        as_pg pg_ctl -D "$W/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

log "work dir $W, repository $REPO, stanza $STANZA"
chmod 0755 "$OUT"
mkdir -p "$W"/run/{lock,log,spool} "$W/sock" "$REPO"
[[ $(id -u) == 0 ]] && chown -R "$PGUSER_OS": "$W" "$REPO"
chmod 0750 "$REPO"

cat >"$C" <<EOF
[global]
repo1-path=$REPO
repo1-retention-full=1
repo1-bundle=n
compress-type=lz4
lock-path=$W/run/lock
log-path=$W/run/log
spool-path=$W/run/spool
log-level-console=warn
log-level-file=detail
start-fast=y
process-max=2

[$STANZA]
pg1-path=$W/pg
pg1-port=$PORT
pg1-socket-path=$W/sock
EOF

log "initdb"
as_pg initdb -D "$W/pg" -U postgres --auth=trust --data-checksums -N -E UTF8 --locale=C.UTF-8 >/dev/null

# A certificate and a preload library make the restored postgresql.conf "managed-service-like":
# they reference things that do not exist where the repository is restored.
openssl req -new -x509 -days 3650 -nodes -subj /CN=fixture \
    -keyout "$W/server.key" -out "$W/server.crt" >/dev/null 2>&1
[[ $(id -u) == 0 ]] && chown "$PGUSER_OS": "$W/server.key" "$W/server.crt"
chmod 0600 "$W/server.key"

cat >>"$W/pg/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W/sock'
wal_level = replica
archive_mode = on
archive_command = 'pgbackrest --config=$C --stanza=$STANZA archive-push %p'
max_wal_size = 256MB
shared_buffers = 64MB
fsync = off
synchronous_commit = off
wal_compression = on
max_connections = 200
shared_preload_libraries = 'pg_stat_statements'
ssl = on
ssl_cert_file = '$W/server.crt'
ssl_key_file = '$W/server.key'
EOF

log "start PostgreSQL"
as_pg pg_ctl -D "$W/pg" -l "$W/pg.log" -w -t 60 start >/dev/null
log "stanza-create + check"
pgb stanza-create
pgb check

log "load data (pgbench scale $SCALE, appdb)"
as_pg pgbench -i -s "$SCALE" -q postgres >/dev/null 2>&1
sql postgres "CREATE DATABASE appdb"
sql appdb "
CREATE EXTENSION pg_stat_statements;
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX customers_name_idx ON customers (name);
INSERT INTO customers (id, email, name)
  SELECT g, 'c' || g || '@example.com', 'Customer ' || g FROM generate_series(1, 5000) g;
CREATE TABLE marker (id int PRIMARY KEY, phase text NOT NULL);
INSERT INTO marker VALUES (1, 'before-full');"

log "full backup"
pgb --type=full backup

as_pg pgbench -n -c 2 -t 500 postgres >/dev/null
sql appdb "INSERT INTO marker VALUES (2, 'before-diff');
INSERT INTO customers (id, email, name)
  SELECT g, 'c' || g || '@example.com', 'Customer ' || g FROM generate_series(5001, 6000) g;"
log "diff backup"
pgb --type=diff backup

as_pg pgbench -n -c 2 -t 500 postgres >/dev/null
sql appdb "INSERT INTO marker VALUES (3, 'before-incr')"
log "incr backup"
pgb --type=incr backup

log "WAL after the last backup"
as_pg pgbench -n -c 2 -t 300 postgres >/dev/null
sql appdb "INSERT INTO marker VALUES (4, 'after-incr')"
val postgres "SELECT pg_switch_wal()" >/dev/null
sql appdb "INSERT INTO marker VALUES (5, 'after-incr-2')"
last=$(val postgres "SELECT pg_walfile_name(pg_switch_wal())")
log "waiting for $last to be archived"
for _ in $(seq 1 600); do
    archived=$(val postgres "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ -n $archived && ! $archived < $last ]] && break
    sleep 0.1
done
[[ -n $archived && ! $archived < $last ]] || die "WAL $last was not archived (last archived: ${archived:-none}); see $W/pg.log"

{
    echo "pgbench_accounts=$(val postgres 'SELECT count(*) FROM pgbench_accounts')"
    echo "pgbench_history=$(val postgres 'SELECT count(*) FROM pgbench_history')"
    echo "marker_max=$(val appdb 'SELECT max(id) FROM marker')"
    echo "customers=$(val appdb 'SELECT count(*) FROM customers')"
    echo "databases=$(val postgres 'SELECT count(*) FROM pg_database WHERE datallowconn')"
} >"$OUT/values.env.tmp"

log "stop PostgreSQL (archives the shutdown checkpoint segment too)"
as_pg pg_ctl -D "$W/pg" -m fast -w stop >/dev/null
ready=$(find "$W/pg/pg_wal/archive_status" -name '*.ready' | wc -l)
[[ $ready == 0 ]] || die "$ready WAL segments were not archived at shutdown; see $W/pg.log"

# The repository becomes "foreign": the source's paths (socket dir, certificate, config) vanish.
trap - EXIT
rm -rf "$W"
mv "$OUT/values.env.tmp" "$OUT/values.env"
log "done: $(find "$REPO" -type f | wc -l) files, $(du -sh "$REPO" | cut -f1)"

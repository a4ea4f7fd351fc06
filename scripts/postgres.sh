#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the test suite, on 127.0.0.1 only.
#
# Installs PostgreSQL 15 with apt-get when its binaries are missing (root, Debian/Ubuntu), creates
# a cluster under ${VERINET_PG_DIR:-/tmp/verinet-pg} owned by the `postgres` user, starts it on
# port ${VERINET_PG_PORT:-5433} unless it already runs, makes sure the role verinet/verinet
# (password auth, CREATEDB) exists, and prints the server URL as the last line of stdout:
#
#   postgres://verinet:verinet@127.0.0.1:5433/postgres
#
# Safe to run again and again: a running server is reused. Tests create their own databases on
# it. The cluster trades durability for speed (fsync off) because it only ever holds test data.
# Stop it with: runuser -u postgres -- pg_ctl -D /tmp/verinet-pg/data stop
set -euo pipefail

pg_version=15
pg_dir=${VERINET_PG_DIR:-/tmp/verinet-pg}
pg_port=${VERINET_PG_PORT:-5433}
data="$pg_dir/data"
run="$pg_dir/run"
logfile="$pg_dir/server.log"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# PostgreSQL refuses to run as root, so as root every server-side command runs as `postgres`.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

find_bindir() {
  local d
  for d in "/usr/lib/postgresql/$pg_version/bin" "$(pg_config --bindir 2>/dev/null || true)" \
    "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

install_postgres() {
  is_root || die "PostgreSQL $pg_version is not installed and installing it needs root (apt-get)"
  command -v apt-get >/dev/null || die "PostgreSQL $pg_version is not installed and apt-get is not available"
  log "installing PostgreSQL $pg_version with apt-get"
  # Debian's packaging would create and start a default cluster on port 5432; we only want ours.
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "postgresql-$pg_version" "postgresql-client-$pg_version" >&2
}

bindir=$(find_bindir) || { install_postgres; bindir=$(find_bindir) || die "pg_ctl/initdb not found after installing"; }
export PATH="$bindir:$PATH"

if is_root && ! id postgres >/dev/null 2>&1; then
  log "creating system user postgres"
  useradd --system --user-group --home-dir "$pg_dir" --shell /bin/sh postgres
fi

mkdir -p "$pg_dir" "$run"
if is_root; then
  chown -R postgres:postgres "$pg_dir"
fi
chmod 0700 "$pg_dir" "$run"

if [ ! -s "$data/PG_VERSION" ]; then
  log "creating cluster in $data"
  rm -rf "$data"
  as_pg "$bindir/initdb" -D "$data" -U postgres --encoding=UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >&2
  # Local socket: only reachable through $run (mode 0700), so trust is confined to postgres/root.
  cat >"$data/pg_hba.conf" <<'EOF'
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
EOF
  echo "include_if_exists = 'verinet.conf'" >>"$data/postgresql.conf"
  if is_root; then chown postgres:postgres "$data/pg_hba.conf"; fi
fi
installed=$(cat "$data/PG_VERSION")
[ "$installed" = "$pg_version" ] || log "warning: cluster in $data is PostgreSQL $installed, binaries are $pg_version"

# Rewritten every run so a changed port takes effect (with a restart below).
cat >"$data/verinet.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$run'
max_connections = 300
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
if is_root; then chown postgres:postgres "$data/verinet.conf"; fi

running_port() {
  # postmaster.pid line 4 is the port; the file only counts if pg_ctl sees the server alive.
  if as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    sed -n 4p "$data/postmaster.pid"
  fi
}

port_now=$(running_port)
if [ -n "$port_now" ] && [ "$port_now" != "$pg_port" ]; then
  log "server runs on port $port_now, restarting on $pg_port"
  as_pg "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2
  port_now=""
fi
if [ -z "$port_now" ]; then
  log "starting server on 127.0.0.1:$pg_port (log: $logfile)"
  if ! as_pg "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t 60 start >&2; then
    tail -n 30 "$logfile" >&2 || true
    die "PostgreSQL did not start"
  fi
else
  log "reusing server already running on 127.0.0.1:$pg_port"
fi

for _ in $(seq 1 60); do
  if as_pg "$bindir/pg_isready" -q -h "$run" -p "$pg_port" -d postgres; then break; fi
  sleep 0.5
done
as_pg "$bindir/pg_isready" -q -h "$run" -p "$pg_port" -d postgres || die "PostgreSQL is not accepting connections"

psql_admin() {
  as_pg "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$run" -p "$pg_port" -U postgres -d postgres "$@"
}
psql_admin >&2 <<'EOF'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'verinet') THEN
    CREATE ROLE verinet LOGIN CREATEDB PASSWORD 'verinet';
  ELSE
    ALTER ROLE verinet LOGIN CREATEDB PASSWORD 'verinet';
  END IF;
END
$$;
EOF

url="postgres://verinet:verinet@127.0.0.1:$pg_port/postgres"
# Prove the URL works the way the tests will use it: TCP, password auth.
PGPASSWORD=verinet "$bindir/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U verinet -d postgres -tAc 'SELECT 1' >/dev/null \
  || die "cannot log in as verinet over TCP"
echo "$url"

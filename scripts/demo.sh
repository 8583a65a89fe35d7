#!/usr/bin/env bash
# The demo pipeline, end to end, on local defaults:
#   1. installs what is missing and starts private PostgreSQL 15 and ClickHouse servers
#      (scripts/services.sh: 127.0.0.1 only, state under target/services);
#   2. creates the seed's demo_table1 and demo_table2 in Postgres;
#   3. builds and runs `tributary run --config config/cdc.toml` (snapshot, then streaming);
#   4. applies the seed's changes:
#        INSERT INTO demo_table1 VALUES (4, 'sample');
#        UPDATE demo_table2 SET value = 'updated' WHERE id = 1;
#   5. shows both tables as ClickHouse has them, then stops tributary with SIGTERM.
# DEMO_CLICKHOUSE=18 uses the ClickHouse 18.16 server instead of the current engine (26.9).
# DEMO_KEEP=1 keeps tributary running afterwards: open the status page, change rows in
# Postgres, kill an actor through the admin API and watch it restart; Ctrl-C stops it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

scripts/install-deps.sh >/dev/null
scripts/services.sh start >/dev/null
while IFS= read -r line; do [[ "$line" == *=* ]] && export "$line"; done < <(scripts/services.sh env)

if [[ "${DEMO_CLICKHOUSE:-26}" == 18 ]]; then CH=$TRIBUTARY_TEST_CH18_URL; else CH=$TRIBUTARY_TEST_CH26_URL; fi
export PGHOST=127.0.0.1 PGPORT=$TRIBUTARY_TEST_PG_PORT PGUSER=$TRIBUTARY_TEST_PG_USER \
       PGPASSWORD=$TRIBUTARY_TEST_PG_PASSWORD PGDATABASE=$TRIBUTARY_TEST_PG_DATABASE \
       CLICKHOUSE_URL=$CH CLICKHOUSE_DATABASE=demo TRIBUTARY_SLOT=tributary_demo TRIBUTARY_PUBLICATION=tributary_demo
ch() { curl -sS --fail-with-body "$CLICKHOUSE_URL/" --data-binary "$1"; }

echo "== demo: fresh tables in Postgres ($PGHOST:$PGPORT) and ClickHouse ($CLICKHOUSE_URL)"
psql -qX -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'tributary_demo';
SET client_min_messages = warning;
DROP PUBLICATION IF EXISTS tributary_demo;
DROP TABLE IF EXISTS demo_table1, demo_table2;
CREATE TABLE demo_table1 (id int PRIMARY KEY, value text);
CREATE TABLE demo_table2 (id int PRIMARY KEY, value text);
INSERT INTO demo_table1 VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma');
INSERT INTO demo_table2 VALUES (1, 'original'), (2, 'kept');
SQL
ch "DROP DATABASE IF EXISTS demo" >/dev/null

echo "== demo: building tributary (release)"
cargo build --release --quiet
LOG=target/demo.log
export TRIBUTARY_HTTP=127.0.0.1:${DEMO_HTTP_PORT:-9464}
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  export TRIBUTARY_ADMIN=true TRIBUTARY_ADMIN_TOKEN
  TRIBUTARY_ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
target/release/tributary run --config config/cdc.toml >"$LOG" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT

wait_for() { # wait_for <sql> <expected> : poll ClickHouse until the answer matches
  for _ in $(seq 1 300); do
    [[ "$(ch "$1" 2>/dev/null || true)" == "$2" ]] && return 0
    kill -0 $PID 2>/dev/null || { echo "tributary exited:"; cat "$LOG"; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for: $1"; cat "$LOG"; exit 1
}
wait_for "SELECT count() FROM demo.demo_table1_live" "3"
echo "== demo: snapshot copied; applying the seed's changes in Postgres"
psql -qX -v ON_ERROR_STOP=1 -c "INSERT INTO demo_table1 VALUES (4, 'sample');" \
                            -c "UPDATE demo_table2 SET value = 'updated' WHERE id = 1;"
wait_for "SELECT value FROM demo.demo_table2_live WHERE id = 1" "updated"
wait_for "SELECT count() FROM demo.demo_table1_live" "4"

for t in demo_table1 demo_table2; do
  echo "== ClickHouse: SELECT * FROM demo.$t FINAL (version: $(ch 'SELECT version()'))"
  ch "SELECT * FROM demo.$t FINAL WHERE _is_deleted = 0 ORDER BY id FORMAT PrettyCompactMonoBlock"
done
if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
  cat <<TXT
== demo: tributary keeps running (log: $LOG)
   status page:   http://$TRIBUTARY_HTTP/        metrics: http://$TRIBUTARY_HTTP/metrics
   change rows:   PGPASSWORD=$PGPASSWORD psql -h $PGHOST -p $PGPORT -U $PGUSER $PGDATABASE
   kill the sink: curl -X POST -H "Authorization: Bearer $TRIBUTARY_ADMIN_TOKEN" "http://$TRIBUTARY_HTTP/admin/kill?actor=root/cdc/sink"
   Ctrl-C stops it (it drains and confirms its position first).
TXT
  trap 'kill -TERM $PID 2>/dev/null' INT
  wait $PID || true
  wait $PID 2>/dev/null || true
  echo "== demo: stopped"
  trap - EXIT
  exit 0
fi
kill -TERM $PID
wait $PID && echo "== demo: tributary drained, confirmed its position and exited 0 (log: $LOG)"
trap - EXIT

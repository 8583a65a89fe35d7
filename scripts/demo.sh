#!/usr/bin/env bash
# The demos, end to end, on local defaults (Debian 12, as root):
#   scripts/demo.sh            the CDC pipeline, PostgreSQL -> ClickHouse
#   scripts/demo.sh sentiment  the sentiment pipeline offline: shipped posts -> LLM -> ClickHouse
# Each installs only what it needs (scripts/install-deps.sh: the CDC demo PostgreSQL 15 and a
# ClickHouse, the sentiment demo a ClickHouse and llama.cpp with SmolLM2-135M; both libssl-dev
# and pkg-config for the build), starts only those private servers (scripts/services.sh start:
# 127.0.0.1 only, state under target/services) and builds tributary with cargo build --release,
# in the background while the rest installs and starts.
# Every step prints a line when it starts and one with its elapsed seconds. The steps' output
# (installs, servers, tributary) goes to target/logs/demo.log (sentiment: demo-sentiment.log),
# cargo's to target/logs/build.log; a failing step prints the last lines of its log.
#
# CDC:
#   1. creates the seed's demo_table1 and demo_table2 in Postgres;
#   2. runs `tributary run --config config/cdc.toml` (snapshot, then streaming);
#   3. applies the seed's changes:
#        INSERT INTO demo_table1 VALUES (4, 'sample');
#        UPDATE demo_table2 SET value = 'updated' WHERE id = 1;
#   4. shows both tables as ClickHouse has them, then stops tributary with SIGTERM.
# Sentiment: runs `tributary run --config config/sentiment-demo.toml`, which replays
#   tests/fixtures/statuses.jsonl (reblogs skipped) through llama.cpp into ClickHouse table
#   demo_sentiment.mastodon_sentiment; waits until every post is there, prints the label mix
#   and a few rows, then stops tributary with SIGTERM.
# DEMO_CLICKHOUSE=18 uses the ClickHouse 18.16 server instead of the current engine (26.9).
# DEMO_TIMEOUT (seconds, default 900) bounds the sentiment demo's wait for its labels.
# DEMO_KEEP=1 keeps tributary running afterwards: it prints the status page address and what to
# try (CDC: change rows in Postgres; both: kill an actor through the admin API and watch it
# restart); Ctrl-C stops it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

MODE=${1:-cdc}
case "$MODE" in
  cdc | sentiment) ;;
  *) echo "usage: $0 [cdc|sentiment]" >&2; exit 2 ;;
esac
case "${DEMO_CLICKHOUSE:-26}" in
  26) CH_SERVER=clickhouse26 CH_DEPS=chdb CH_NAME="ClickHouse 26.9 (chdb-core)" CH_VAR=TRIBUTARY_TEST_CH26_URL ;;
  18) CH_SERVER=clickhouse18 CH_DEPS=clickhouse18 CH_NAME="ClickHouse 18.16" CH_VAR=TRIBUTARY_TEST_CH18_URL ;;
  *) echo "DEMO_CLICKHOUSE must be 26 (the default) or 18" >&2; exit 2 ;;
esac
[[ $EUID -eq 0 ]] || { echo "demo: must run as root (it installs packages and starts servers)" >&2; exit 1; }

mkdir -p target/logs
if [[ "$MODE" == cdc ]]; then LOG=target/logs/demo.log; else LOG=target/logs/demo-sentiment.log; fi
BUILD_LOG=target/logs/build.log
: >"$LOG"
T0=$SECONDS
PID=""       # tributary
BUILD_PID="" # cargo build, in a session of its own

say() { echo "demo: $*"; }

# fail MESSAGE [LOG]: what failed, the last lines of the log and where it is; exits 1.
fail() {
  local log=${2:-$LOG}
  say "FAILED: $1"
  echo "----- last lines of $log -----"
  tail -n 30 "$log"
  echo "-----"
  say "full log: $log"
  exit 1
}

cleanup() {
  if [[ -n "$PID" ]]; then kill -TERM "$PID" 2>/dev/null || true; fi
  if [[ -n "$BUILD_PID" ]]; then kill -TERM -- "-$BUILD_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# begin TEXT / finish: a step's first line, and its last one with the elapsed seconds.
STEP="" STEP_T=0
begin() {
  STEP=$1 STEP_T=$SECONDS
  say "$STEP …"
  printf '\n== %s demo: %s\n' "$(date -u '+%F %T UTC')" "$STEP" >>"$LOG"
}
finish() { say "$STEP … done in $((SECONDS - STEP_T)) s"; }

# step TEXT CMD...: CMD between begin and finish, its output in the log. CMD runs as a job that
# is waited for, not under `if` or `||`: a shell function there would run with set -e off.
step() {
  local rc=0
  begin "$1"
  shift
  "$@" >>"$LOG" 2>&1 </dev/null &
  wait $! || rc=$?
  ((rc == 0)) || fail "$STEP (exit $rc after $((SECONDS - STEP_T)) s)"
  finish
}

ch() { curl -sS --fail-with-body "$CLICKHOUSE_URL/" --data-binary "$1"; }

# A tributary that exited is gone from /proc or a zombie not reaped yet.
tributary_runs() {
  [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null && ! grep -q '^State:.*zombie' "/proc/$PID/status" 2>/dev/null
}

# wait_for SQL EXPECTED [SECONDS]: polls ClickHouse until SQL answers EXPECTED; fails when
# tributary exits or the time (default 60 s) runs out.
wait_for() {
  local limit=${3:-60} deadline got=""
  deadline=$((SECONDS + limit))
  while ((SECONDS < deadline)); do
    got=$(ch "$1" 2>/dev/null) || got=""
    [[ "$got" == "$2" ]] && return 0
    tributary_runs || { echo "demo: tributary exited"; return 1; }
    sleep 0.2
  done
  echo "demo: timed out after $limit s waiting for \`$1\` to answer $2 (last answer: ${got:-none})"
  return 1
}

# start_tributary CONFIG: runs tributary in the background, its output appended to the log.
start_tributary() {
  export TRIBUTARY_HTTP=127.0.0.1:${DEMO_HTTP_PORT:-9464}
  if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
    export TRIBUTARY_ADMIN=true TRIBUTARY_ADMIN_TOKEN
    TRIBUTARY_ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  fi
  printf '\n== %s demo: target/release/tributary run --config %s\n' "$(date -u '+%F %T UTC')" "$1" >>"$LOG"
  target/release/tributary run --config "$1" >>"$LOG" 2>&1 </dev/null &
  PID=$!
}

# stop_tributary: SIGTERM, and tributary's exit code (0: drained and confirmed its position).
stop_tributary() {
  local rc=0
  begin "stopping tributary (SIGTERM: it drains, then records its position)"
  kill -TERM "$PID"
  wait "$PID" || rc=$?
  PID=""
  ((rc == 0)) || fail "tributary exited $rc after SIGTERM"
  finish
}

# keep_running TEXT: DEMO_KEEP=1: prints TEXT (what to try) and waits for Ctrl-C.
keep_running() {
  echo "$1"
  echo "   Ctrl-C stops it (it drains and records its position first)."
  trap 'kill -TERM $PID 2>/dev/null || true' INT TERM
  wait "$PID" || true
  wait "$PID" 2>/dev/null || true
  PID=""
  say "stopped"
}

# ---------------------------------------------------------------- install, start, build

if [[ "$MODE" == cdc ]]; then
  say "the CDC demo: PostgreSQL 15 -> tributary -> $CH_NAME; output in $LOG"
  debs=(build postgres) servers=(postgres "$CH_SERVER") pips=()
else
  say "the sentiment demo: shipped posts -> tributary -> llama.cpp (SmolLM2-135M) -> $CH_NAME; output in $LOG"
  debs=(build) servers=("$CH_SERVER" llm) pips=(llm)
fi
if [[ "$CH_DEPS" == chdb ]]; then pips=(chdb "${pips[@]}"); else debs+=("$CH_DEPS"); fi

# Debian packages first: the build needs libssl-dev and pkg-config.
# (install-deps shows a failing step's last lines itself.)
INSTALL_DEPS_LOG="$REPO/$LOG" scripts/install-deps.sh "${debs[@]}" || { say "FAILED: scripts/install-deps.sh ${debs[*]} (full log: $LOG)"; exit 1; }

say "building tributary in the background: cargo build --release (first build: about 5 minutes on 2 cores; output in $BUILD_LOG) …"
BUILD_T=$SECONDS
setsid -w cargo build --release --locked >"$BUILD_LOG" 2>&1 </dev/null &
BUILD_PID=$!

if ((${#pips[@]})); then
  INSTALL_DEPS_LOG="$REPO/$LOG" scripts/install-deps.sh "${pips[@]}" || { say "FAILED: scripts/install-deps.sh ${pips[*]} (full log: $LOG)"; exit 1; }
fi

step "starting ${servers[*]} (scripts/services.sh)" scripts/services.sh start "${servers[@]}"
# KEY=VALUE lines, no quoting: read them line by line.
while IFS= read -r line; do
  if [[ "$line" == *=* ]]; then export "${line?}"; fi
done < <(scripts/services.sh env)
[[ -n "${!CH_VAR:-}" ]] || fail "scripts/services.sh env gives no $CH_VAR"
export CLICKHOUSE_URL=${!CH_VAR}

if [[ -n "$BUILD_PID" ]] && kill -0 "$BUILD_PID" 2>/dev/null; then say "waiting for the build …"; fi
rc=0
wait "$BUILD_PID" || rc=$?
BUILD_PID=""
((rc == 0)) || fail "cargo build --release (exit $rc after $((SECONDS - BUILD_T)) s)" "$BUILD_LOG"
say "building tributary … done in $((SECONDS - BUILD_T)) s"

# ---------------------------------------------------------------- CDC

cdc_fresh_tables() {
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
  ch "DROP DATABASE IF EXISTS demo"
}

cdc_snapshot() {
  wait_for "SELECT count() FROM demo.demo_table1_live" 3
  wait_for "SELECT count() FROM demo.demo_table2_live" 2
}

cdc_changes() {
  psql -qX -v ON_ERROR_STOP=1 -c "INSERT INTO demo_table1 VALUES (4, 'sample');" \
    -c "UPDATE demo_table2 SET value = 'updated' WHERE id = 1;"
  wait_for "SELECT value FROM demo.demo_table2_live WHERE id = 1" "updated"
  wait_for "SELECT count() FROM demo.demo_table1_live" 4
}

run_cdc() {
  export PGHOST=127.0.0.1 PGPORT=$TRIBUTARY_TEST_PG_PORT PGUSER=$TRIBUTARY_TEST_PG_USER \
    PGPASSWORD=$TRIBUTARY_TEST_PG_PASSWORD PGDATABASE=$TRIBUTARY_TEST_PG_DATABASE \
    CLICKHOUSE_DATABASE=demo TRIBUTARY_SLOT=tributary_demo TRIBUTARY_PUBLICATION=tributary_demo
  step "fresh demo tables in Postgres $PGHOST:$PGPORT and ClickHouse $CLICKHOUSE_URL" cdc_fresh_tables
  start_tributary config/cdc.toml
  step "tributary run --config config/cdc.toml: the snapshot in ClickHouse" cdc_snapshot
  step "the seed's INSERT and UPDATE in Postgres, until ClickHouse has them" cdc_changes

  local t
  say "result after $((SECONDS - T0)) s, as ClickHouse $(ch 'SELECT version()') has it:"
  for t in demo_table1 demo_table2; do
    echo "SELECT * FROM demo.$t FINAL WHERE _is_deleted = 0 ORDER BY id"
    ch "SELECT * FROM demo.$t FINAL WHERE _is_deleted = 0 ORDER BY id FORMAT PrettyCompactMonoBlock"
  done
  # The original stack's last step, "compare the records in PostgreSQL and ClickHouse", by
  # tributary itself beside the running pipeline (exit 0: every table equal).
  say "tributary verify --config config/cdc.toml (ClickHouse against Postgres, beside the running pipeline):"
  local out rc=0
  out=$(target/release/tributary verify --config config/cdc.toml 2>&1 </dev/null) || rc=$?
  echo "$out"
  echo "$out" >>"$LOG"
  ((rc == 0)) || fail "tributary verify found differences or failed (exit $rc)"
  if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
    keep_running "== demo: tributary keeps running (log: $LOG)
   status page:   http://$TRIBUTARY_HTTP/        metrics: http://$TRIBUTARY_HTTP/metrics
   change rows:   PGPASSWORD=$PGPASSWORD psql -h $PGHOST -p $PGPORT -U $PGUSER $PGDATABASE
   see them:      curl $CLICKHOUSE_URL/ --data-binary 'SELECT * FROM demo.demo_table1 FINAL WHERE _is_deleted = 0 ORDER BY id'
   kill the sink: curl -X POST -H \"Authorization: Bearer $TRIBUTARY_ADMIN_TOKEN\" \"http://$TRIBUTARY_HTTP/admin/kill?actor=root/cdc/sink\""
    return 0
  fi
  stop_tributary
  say "the CDC demo took $((SECONDS - T0)) s (output in $LOG)"
}

# ---------------------------------------------------------------- sentiment

SENTIMENT_TABLE=demo_sentiment.mastodon_sentiment

# sentiment_rows: the posts in the table (0 before it exists).
sentiment_rows() {
  local n
  n=$(ch "SELECT count() FROM $SENTIMENT_TABLE FINAL WHERE _is_deleted = 0" 2>/dev/null) || n=0
  [[ "$n" =~ ^[0-9]+$ ]] || n=0
  echo "$n"
}

run_sentiment() {
  local posts=tests/fixtures/statuses.jsonl expected n limit=${DEMO_TIMEOUT:-900} shown
  # What the replay classifies: every status but the reblogs (skip_reblogs) and empty lines.
  expected=$(grep -cv -e '"reblog":{' -e '^[[:space:]]*$' "$posts")
  export LLM_URL=$TRIBUTARY_TEST_LLM_URL LLM_MODEL=$TRIBUTARY_TEST_LLM_MODEL \
    CLICKHOUSE_DATABASE=demo_sentiment DEMO_POSTS=$posts
  # The replay's resume point lives in the database too: dropped, the replay starts over.
  step "no database demo_sentiment in ClickHouse $CLICKHOUSE_URL" ch "DROP DATABASE IF EXISTS demo_sentiment"
  start_tributary config/sentiment-demo.toml
  begin "tributary run --config config/sentiment-demo.toml: SmolLM2-135M labels $expected posts (one at a time, on the CPU)"
  shown=$SECONDS
  while :; do
    n=$(sentiment_rows)
    ((n >= expected)) && break
    tributary_runs || fail "tributary exited"
    ((SECONDS - STEP_T < limit)) || fail "$n of $expected posts in $SENTIMENT_TABLE after $limit s (DEMO_TIMEOUT)"
    if ((SECONDS - shown >= 15)); then
      say "  … $n of $expected posts so far"
      shown=$SECONDS
    fi
    sleep 0.5
  done
  finish

  say "result after $((SECONDS - T0)) s: $SENTIMENT_TABLE as ClickHouse $(ch 'SELECT version()') has it:"
  local live="$SENTIMENT_TABLE FINAL WHERE _is_deleted = 0"
  echo "SELECT sentiment, count() FROM $SENTIMENT_TABLE FINAL GROUP BY sentiment"
  ch "SELECT sentiment, count() AS posts FROM $live GROUP BY sentiment ORDER BY posts DESC, sentiment FORMAT PrettyCompactMonoBlock"
  echo "a few rows, up to three of each label:"
  ch "SELECT m_id, username, language, sentiment, round(confidence, 2) AS confidence, llm_latency_ms,
        substringUTF8(replaceAll(mastodon_text, '\n', ' '), 1, 48) AS text
      FROM $live ORDER BY sentiment, m_id LIMIT 3 BY sentiment FORMAT PrettyCompactMonoBlock"
  if [[ "${DEMO_KEEP:-0}" == 1 ]]; then
    keep_running "== demo: tributary keeps running (log: $LOG)
   status page:     http://$TRIBUTARY_HTTP/        metrics: http://$TRIBUTARY_HTTP/metrics
   the labels:      curl $CLICKHOUSE_URL/ --data-binary 'SELECT sentiment, count() FROM $SENTIMENT_TABLE FINAL GROUP BY sentiment'
   kill a worker:   curl -X POST -H \"Authorization: Bearer $TRIBUTARY_ADMIN_TOKEN\" \"http://$TRIBUTARY_HTTP/admin/kill?actor=root/sentiment/pool/worker-0\"
   the LLM server:  $LLM_URL (model $LLM_MODEL, log $TRIBUTARY_TEST_LLM_LOG)"
    return 0
  fi
  stop_tributary
  say "the sentiment demo took $((SECONDS - T0)) s (output in $LOG)"
}

if [[ "$MODE" == cdc ]]; then run_cdc; else run_sentiment; fi

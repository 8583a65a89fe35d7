#!/usr/bin/env bash
# The project's test command: starts (or reuses) the private test servers, exports their
# addresses (TRIBUTARY_TEST_* from target/services/env), then runs the ClickHouse 26.9 front's
# own test and `cargo test --locked`, passing any arguments on to cargo test. Under CI=true (or
# with TRIBUTARY_FUZZ_SECS set) it then runs every fuzz target for TRIBUTARY_FUZZ_SECS seconds
# (default 15) with scripts/fuzz.sh: a few minutes to build them from scratch, in fuzz/target.
# Last it prints the long tests' reports (target/reports/) and closes on one line with cargo
# test's counts over all test binaries: `tests: N passed, M failed`.
# It first runs scripts/install-deps.sh with no argument (everything the suite needs), which
# installs only what is missing (seconds when everything is there), so this one command works on
# a fresh Debian 12 machine; it prints a line per install step with its elapsed seconds and keeps
# the output of apt-get, pip and cargo in target/logs/install-deps.log.
# The servers keep running afterwards for the next run; TRIBUTARY_STOP_SERVICES=1 stops them.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}

if [[ "${TRIBUTARY_STOP_SERVICES:-0}" == 1 ]]; then
  trap 'scripts/services.sh stop || true' EXIT
fi

scripts/install-deps.sh
scripts/services.sh start
# KEY=VALUE lines, no quoting: read them line by line (values may hold spaces).
while IFS= read -r line; do
  if [[ "$line" == *=* ]]; then export "${line?}"; fi
done < <(scripts/services.sh env)

failed=()

# The front's test first and cargo's next, then the short fuzz run (CI): its crash inputs become
# regression inputs that the next cargo test replays (tests/integration/fuzz_regressions.rs).
FRONT_TEST=tests/chdb_front/test_front.py
if [[ -f "$FRONT_TEST" ]]; then
  echo "test.sh: $PYTHON $FRONT_TEST"
  "$PYTHON" "$FRONT_TEST" || failed+=("$FRONT_TEST")
elif [[ "${CI:-}" == "true" ]]; then
  echo "test.sh: $FRONT_TEST is missing" >&2
  failed+=("$FRONT_TEST (missing)")
else
  echo "test.sh: WARNING: $FRONT_TEST missing, skipped (this fails under CI=true)" >&2
fi

echo "test.sh: docker-compose -f docker/docker-compose.yml config"
docker-compose -f docker/docker-compose.yml config >/dev/null || failed+=("docker/docker-compose.yml")
echo "test.sh: scripts/check-docker-context.sh (the Dockerfile copies the whole workspace)"
scripts/check-docker-context.sh || failed+=("docker/Dockerfile")

echo "test.sh: scripts/module-deps.py (no import cycle, no import from a folder above)"
"$PYTHON" scripts/module-deps.py || failed+=("scripts/module-deps.py")

echo "test.sh: scripts/check-monitoring.sh (promtool rules and tests, dashboard)"
scripts/check-monitoring.sh || failed+=("scripts/check-monitoring.sh")

echo "test.sh: cargo test --locked --no-fail-fast $*"
# The long tests (checker, outages) write their reports to target/reports/, printed below.
rm -rf target/reports
mkdir -p target
# (pipefail: the pipeline fails when cargo test does)
if ! cargo test --locked --no-fail-fast "$@" 2>&1 | tee target/cargo-test.log; then
  failed+=("cargo test")
fi

if [[ "${CI:-}" == "true" || -n "${TRIBUTARY_FUZZ_SECS:-}" ]]; then
  echo "test.sh: scripts/fuzz.sh ${TRIBUTARY_FUZZ_SECS:-15} (every fuzz target)"
  scripts/fuzz.sh "${TRIBUTARY_FUZZ_SECS:-15}" || failed+=("scripts/fuzz.sh")
fi

for r in target/reports/*.txt; do
  [[ -f "$r" ]] || continue
  echo "test.sh: report $r"
  cat "$r"
done
# cargo test's counts over every test binary, as the closing line.
read -r passed failures < <(awk '/^test result:/ { for (i = 2; i <= NF; i++) {
    if ($i ~ /^passed/) p += $(i - 1); if ($i ~ /^failed/) f += $(i - 1) } }
  END { print p + 0, f + 0 }' target/cargo-test.log)
if ((${#failed[@]})); then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  echo "tests: $passed passed, $failures failed"
  exit 1
fi
echo "test.sh: all tests passed"
echo "tests: $passed passed, $failures failed"

#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a while: the pgoutput decoder, the Debezium
# envelope parser, the Mastodon stream (SSE, events, HTML to text), the LLM reply parser and the
# config loader. Each starts from its seeds (fuzz/seeds/<target>, taken from the tests' fixtures)
# plus what earlier runs found (fuzz/corpus/<target>).
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET...]
# A crash fails the run; its input is in fuzz/artifacts/<target>/ and becomes a regression test
# (a unit test next to the parser, with the input inlined).
# cargo-fuzz runs on the stable toolchain here with RUSTC_BOOTSTRAP=1 (it needs -Z flags), and
# without a sanitizer: the code under test has no `unsafe`, what we look for are panics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-30}
[[ $# -gt 0 ]] && shift
targets=("$@")
((${#targets[@]})) || targets=(pgoutput debezium mastodon llm_reply config)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo install cargo-fuzz (once)"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build --sanitizer none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${secs}s"
  log="corpus/$t.log"
  if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "panicked|SUMMARY|Test unit written|ERROR" "$log" | head -20 || tail -20 "$log"
    echo "fuzz: $t FAILED (a crash: its input is in fuzz/artifacts/$t/; full log $PWD/$log)"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" | tr '\n' ' '
  echo
done
echo "fuzz: no crash in ${#targets[@]} targets x ${secs}s"

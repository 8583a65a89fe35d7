#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a while: the pgoutput decoder, a snapshot's
# binary COPY reader and its RowBinary writer, the Debezium
# envelope parser, the Mastodon stream (SSE, events, HTML to text), the LLM reply parser, the
# X.509 certificate reader and the config loader. Each starts from its seeds
# (fuzz/seeds/<target>, taken from the tests' fixtures) plus what earlier runs found
# (fuzz/corpus/<target>) and the regression inputs (fuzz/regressions/<target>).
#   scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET...]
# A crash fails the run (after the other targets ran): libFuzzer writes the input to
# fuzz/artifacts/<target>/crash-*, and this script copies it to fuzz/regressions/<target>/, to be
# committed: tests/integration/fuzz_regressions.rs replays every file there on each `cargo test`, so it fails
# until the panic is fixed, and stays as a regression test afterwards.
# cargo-fuzz runs on the stable toolchain here with RUSTC_BOOTSTRAP=1 (it needs -Z flags), and
# without a sanitizer: the code under test has no `unsafe`, what we look for are panics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-30}
[[ $# -gt 0 ]] && shift
targets=("$@")
((${#targets[@]})) || targets=(pgoutput pgframe debezium mastodon llm_reply x509 config copy_binary)
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo install cargo-fuzz (once)"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build --sanitizer none
# Copies the crash inputs that libFuzzer wrote for target $1 since the file $2 was touched from
# artifacts/$1/ to regressions/$1/; prints each, and fails if there was none.
keep_crashes() {
  local t=$1 since=$2 f name found=0
  mkdir -p "regressions/$t"
  while IFS= read -r -d '' f; do
    found=1
    name=${f##*/}
    if cmp -s "$f" "regressions/$t/$name"; then
      echo "fuzz: $t: fuzz/regressions/$t/$name still crashes (a regression input already)"
    else
      cp "$f" "regressions/$t/$name"
      echo "fuzz: $t: fuzz/regressions/$t/$name is now a regression input: commit it" \
        "(tests/integration/fuzz_regressions.rs replays it) and fix the panic"
    fi
  done < <(find "artifacts/$t" -maxdepth 1 -type f -name 'crash-*' -newer "$since" -print0 2>/dev/null)
  ((found))
}

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "regressions/$t"
  echo "fuzz: $t for ${secs}s"
  log="corpus/$t.log"
  stamp="corpus/$t.start"
  touch "$stamp"
  if ! cargo fuzz run --sanitizer none "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
    -max_total_time="$secs" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "panicked|SUMMARY|Test unit written|ERROR" "$log" | head -20 || tail -20 "$log"
    if ! keep_crashes "$t" "$stamp"; then
      echo "fuzz: $t FAILED without a crash input (a timeout, out of memory or a build error:" \
        "see fuzz/artifacts/$t/ and the full log $PWD/$log)"
    fi
    failed+=("$t")
    rm -f "$stamp"
    continue
  fi
  rm -f "$stamp"
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" | tr '\n' ' '
  echo
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (full logs in $PWD/corpus/<target>.log)" >&2
  exit 1
fi
echo "fuzz: no crash in ${#targets[@]} targets x ${secs}s"

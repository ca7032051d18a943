#!/bin/sh
# run-tests.sh — every test stage of `make test`; each stage runs even if an earlier one
# failed, and the last line is the summary: "N passed, N failed".
#   run-tests.sh "UNIT_BINS" "UNIT_ASAN_BINS" "FUZZ_BINS" FUZZ_SECONDS
cd "$(dirname "$0")/.."
unit=$1 unit_asan=$2 fuzzers=$3 fuzz_seconds=${4:-8}
passed=0 failed=0 failures=""
stage() { # stage NAME COMMAND...
  name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); echo "--- ok: $name"
  else failed=$((failed + 1)); failures="$failures $name"; echo "--- FAILED: $name"; fi
}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in $unit; do stage "unit $(basename "$t")" "$t"; done
for t in $unit_asan; do stage "unit-asan $(basename "$t")" "$t"; done
stage "e2e" python3 tests/e2e/run.py --bin build/quotagate
stage "e2e-asan" python3 tests/e2e/run.py --bin build/quotagate-asan --sanitized
for f in $fuzzers; do
  n=$(basename "$f")
  corpus=build/corpus/$n
  mkdir -p "$corpus"
  seeds=fuzz/seeds/${n#fuzz_}
  [ -d "$seeds" ] || seeds=""
  # shellcheck disable=SC2086
  stage "$n (${fuzz_seconds}s)" "$f" -max_total_time="$fuzz_seconds" -print_final_stats=0 "$corpus" $seeds
done
echo
[ -n "$failures" ] && echo "failed stages:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

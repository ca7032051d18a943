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
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in $unit; do stage "unit $(basename "$t")" "$t"; done
for t in $unit_asan; do stage "unit-asan $(basename "$t")" "$t"; done
stage "e2e" python3 tests/e2e/run.py --bin build/quotagate
stage "e2e-asan" python3 tests/e2e/run.py --bin build/quotagate-asan --sanitized
# Randomized faults on the sanitizer build; the seed is printed (rerun with --seed N).
stage "soak-asan" python3 tests/e2e/soak.py --bin build/quotagate-asan --sanitized --seconds "${SOAK_SECONDS:-25}"
# A fuzzer's progress lines go to build/fuzz-NAME.log; the stage shows its last line, or
# the tail of the log (the crash and the reproducer's file name) when it fails.
fuzz_run() { # fuzz_run BINARY LOG ARGS...
  bin=$1 log=$2; shift 2
  if "$bin" "$@" >"$log" 2>&1; then grep -E "^Done [0-9]+ runs" "$log" | tail -1; return 0; fi
  tail -40 "$log"; return 1
}
for f in $fuzzers; do
  n=$(basename "$f")
  corpus=build/corpus/$n
  mkdir -p "$corpus"
  seeds=fuzz/seeds/${n#fuzz_}
  [ -d "$seeds" ] || seeds=""
  # shellcheck disable=SC2086
  stage "$n (${fuzz_seconds}s)" fuzz_run "$f" "build/$n.log" -max_total_time="$fuzz_seconds" "$corpus" $seeds
done
echo
[ -n "$failures" ] && echo "failed stages:$failures"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

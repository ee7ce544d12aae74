#!/usr/bin/env bash
# Every test of gpuproxyd, in the order a failure is cheapest to read:
#   1. build (warnings are errors under CI=true)
#   2. unit tests (Criterion)
#   3. integration tests: the real daemon against fake upstreams (Python stdlib)
#   4. the official openai npm SDK against the real daemon (node:test)
#   5. unit + integration again under AddressSanitizer + UndefinedBehaviorSanitizer
#   6. the libFuzzer harnesses, 20 s each (when clang is present)
# The last line counts the suites: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHON=/usr/bin/python3
passed=0; failed=0; failures=()

suite() {
  local name=$1; shift
  echo
  echo "=== $name"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0))s)"
  fi
}

integration() {
  # The tests skip themselves without a binary; here a missing one is a failure.
  [ -x "$1" ] || { echo "$1 was not built"; return 1; }
  GPUPROXYD_BIN="$1" $PYTHON -m unittest discover -s tests/integration -t . "${@:2}"
}

sdk() {
  if [ ! -f tests/e2e/package.json ]; then echo "no SDK tests"; return 0; fi
  if [ ! -d tests/e2e/node_modules/openai ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error) || return 1
  fi
  [ -x build/gpuproxyd ] || { echo "build/gpuproxyd was not built"; return 1; }
  GPUPROXYD_BIN=build/gpuproxyd node --test tests/e2e/
}

jobs=$(nproc 2>/dev/null || echo 2)
# A throwaway PostgreSQL for the store's tests (the same suite runs on SQLite and PostgreSQL).
if eval "$(bash scripts/pg_temp.sh start)"; then
  trap 'bash scripts/pg_temp.sh stop "$GPD_PG_DIR" >/dev/null 2>&1' EXIT
else
  echo "PostgreSQL could not start: the store's PostgreSQL tests fail"; failed=$((failed + 1)); failures+=("postgres")
fi
suite "build" make -j"$jobs" all
suite "unit tests" make -j"$jobs" unit
suite "fake provider APIs" $PYTHON -m unittest tests.fakes.test_fakes
suite "integration tests" integration build/gpuproxyd
suite "openai SDK tests" sdk
suite "build (ASan+UBSan)" make -j"$jobs" BUILD=build-asan SAN=1 OPT="-O1 -g" all
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
suite "unit tests (ASan+UBSan)" make -j"$jobs" BUILD=build-asan SAN=1 OPT="-O1 -g" unit
suite "integration tests (ASan+UBSan)" integration build-asan/gpuproxyd
suite "fuzzers" bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

echo
if [ $failed -gt 0 ]; then echo "failed suites: ${failures[*]}"; fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]

#!/usr/bin/env bash
# Build every libFuzzer harness in tests/fuzz and run each for N seconds
# (default 20) from its seed corpus.  Needs clang; skipped without it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
if ! command -v clang >/dev/null; then
  echo "fuzz: clang not found, skipping"
  exit 0
fi
declare -A sources=(
  [http_parser]="src/http/parser.c"
  [toml]="src/core/toml.c src/core/units.c"
  [json_scan]="src/core/json_scan.c src/core/log.c src/gateway/usage.c"
)
out=build-fuzz
mkdir -p "$out"
failed=0
for harness in tests/fuzz/fuzz_*.c; do
  name=$(basename "$harness" .c); name=${name#fuzz_}
  srcs=${sources[$name]:-}
  if [ -z "$srcs" ]; then echo "fuzz: no sources listed for $name in scripts/fuzz.sh" >&2; exit 1; fi
  bin="$out/fuzz_$name"
  clang -std=gnu17 -D_GNU_SOURCE -g -O1 -Isrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    "$harness" $srcs -lm -o "$bin"
  corpus=$(mktemp -d)
  cp -r tests/fuzz/corpus/"$name"/. "$corpus"/ 2>/dev/null || true
  echo "== fuzz $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -print_final_stats=0 -artifact_prefix="$out/$name-" "$corpus" \
       >"$out/$name.log" 2>&1; then
    echo "fuzz: $name FAILED (see $out/$name.log)"; tail -30 "$out/$name.log"; failed=1
  else
    grep -E "^#[0-9]+.*DONE" "$out/$name.log" | tail -1 || tail -1 "$out/$name.log"
  fi
  rm -rf "$corpus"
done
exit $failed

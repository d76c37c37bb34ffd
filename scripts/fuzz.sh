#!/bin/bash
# Runs every libFuzzer target (tests/fuzz/README.md) for SECONDS each: first the inputs that
# once crashed it (tests/fuzz/regressions/TARGET, each must now pass), then fuzzing from the
# committed seeds (tests/fuzz/seeds/TARGET) and the corpus it grows (.cache/fuzz/corpus/TARGET).
# Usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]
set -uo pipefail
build=${1:?build directory}
seconds=${2:?seconds per target}
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(archive manifest qmp helper_host helper_guest share_extract parsers)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
  bin=$build/fuzz_$t
  corpus=$root/.cache/fuzz/corpus/$t
  artifacts=$root/.cache/fuzz/artifacts/$t
  log=$root/.cache/fuzz/$t.log
  mkdir -p "$corpus" "$artifacts"
  regressions=("$root"/tests/fuzz/regressions/"$t"/*)
  if [ -e "${regressions[0]}" ] && ! TMPDIR=$scratch "$bin" "${regressions[@]}" >"$log" 2>&1; then
    echo "fuzz: $t: a saved regression input crashes again; see $log"
    failed=1
    continue
  fi
  if TMPDIR=$scratch "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "$root/tests/fuzz/seeds/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $t: ${runs:-?} inputs in ${seconds} s, no failure (corpus: $(ls "$corpus" | wc -l) inputs)"
  else
    echo "fuzz: $t: FAILED; the report is in $log and the input in $artifacts/" \
         "(fix it, then keep the input in tests/fuzz/regressions/$t/)"
    failed=1
  fi
done
exit $failed

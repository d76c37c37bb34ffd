#!/usr/bin/env bash
# make bench: kata-snapshot against plain QEMU migration (bench/bench.cpp), then live mode
# against stop mode (bench/live.cpp). BENCH_ONLY=save|live runs one of them.
set -euo pipefail
build=${1:-build}
rounds=${BENCH_ROUNDS:-5}
[ "${BENCH_ONLY:-}" = live ] || "$build/bench_snapshot" "$rounds"
[ "${BENCH_ONLY:-}" = save ] || "$build/bench_live" "$rounds"

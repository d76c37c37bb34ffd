#!/usr/bin/env bash
# make bench: kata-snapshot against plain QEMU migration (see bench/bench.cpp).
set -euo pipefail
build=${1:-build}
exec "$build/bench_snapshot" "${BENCH_ROUNDS:-5}"

#!/usr/bin/env bash
# make bench: kata-snapshot against plain QEMU migration (bench/bench.cpp), then live mode
# against stop mode (bench/live.cpp), then oci: repositories against .ksnap files
# (bench/repository.cpp), then registries against skopeo and local files (bench/registry.cpp),
# then container mode against a whole-VM snapshot of the same guest (bench/containers.cpp).
# BENCH_ONLY=save|live|repository|registry|containers runs one of them.
set -euo pipefail
build=${1:-build}
rounds=${BENCH_ROUNDS:-5}
only=${BENCH_ONLY:-}
[ -n "$only" ] && [ "$only" != save ] || "$build/bench_snapshot" "$rounds"
[ -n "$only" ] && [ "$only" != live ] || "$build/bench_live" "$rounds"
[ -n "$only" ] && [ "$only" != repository ] || "$build/bench_repository" "$rounds"
[ -n "$only" ] && [ "$only" != registry ] || "$build/bench_registry" "$rounds"
[ -n "$only" ] && [ "$only" != containers ] || "$build/bench_containers" "$rounds"

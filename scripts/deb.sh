#!/usr/bin/env bash
# make deb: builds the Debian package as a packager would, a Release build with the default
# options into /usr, and fails on any compiler warning (the project builds warning-free
# without -Werror too). Prints the package's path.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build-deb}
cd "$top"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
log="$build/build.log"
cmake --build "$build" -j "$(nproc)" >"$log" 2>&1 || # everything, tests too, as a distribution build does
  { tail -n 40 "$log" >&2; exit 1; }
if grep -n 'warning:' "$log" >&2; then
  echo "deb: the Release build warns (above)" >&2
  exit 1
fi
(cd "$build" && cpack -G DEB >/dev/null)
ls "$top/$build"/kata-snapshot_*.deb

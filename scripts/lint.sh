#!/usr/bin/env bash
# make lint: clang-format (no diff allowed) and clang-tidy (bugprone-*, performance-*) on
# every project source. Usage: lint.sh BUILD_DIR (for compile_commands.json).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mapfile -t files < <(git ls-files '*.cpp' '*.hpp')
echo "lint: clang-format on ${#files[@]} files"
clang-format --dry-run -Werror "${files[@]}"
mapfile -t sources < <(git ls-files '*.cpp')
echo "lint: clang-tidy on ${#sources[@]} files"
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$build" --quiet --extra-arg=-Wno-unknown-warning-option 2>&1 |
  grep -v -E '^[0-9]+ warnings? generated|^Suppressed|^Use -header-filter|^$' > "$build/clang-tidy.log" || true
if grep -q -E 'error:|warning:' "$build/clang-tidy.log"; then
  cat "$build/clang-tidy.log"; echo "lint: clang-tidy found problems" >&2; exit 1
fi
echo "lint: ok"

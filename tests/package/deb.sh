#!/usr/bin/env bash
# The Debian package as a new user meets it: make deb, dpkg -i on this machine, the manual,
# --version, bash completion, the helper for guest images, the demo run with the installed
# binary, lintian, then dpkg -r, which must leave nothing behind. Run by `make test` (as
# root; skipped when kata-snapshot is already installed from elsewhere, which it would replace).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-deb}
passed=0
failed=0
check() { # DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@" >/tmp/ksnap-deb-check.log 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $what" >&2
    tail -n 20 /tmp/ksnap-deb-check.log >&2
  fi
}
if [ "$(id -u)" -ne 0 ]; then
  echo "package test: skipped (needs root for dpkg -i)"
  exit 0
fi
if dpkg-query -W -f='${Status}' kata-snapshot 2>/dev/null | grep -q 'install ok installed'; then
  echo "package test: skipped (a kata-snapshot package is installed already; not replacing it)"
  exit 0
fi
deb=$(bash "$top/scripts/deb.sh" "$build" | tail -n 1)
echo "package: $deb"
version=$(sed -n 's/^project(kata-snapshot VERSION \([0-9.]*\).*/\1/p' "$top/CMakeLists.txt")
check "dpkg -i" dpkg -i "$deb"
mapfile -t files < <(dpkg -L kata-snapshot | while read -r f; do [ -f "$f" ] && echo "$f"; done)
check "man -w kata-snapshot" man -w kata-snapshot
check "the manual renders" bash -c 'man -P cat kata-snapshot 2>/dev/null | grep -q "^SYNOPSIS"'
check "kata-snapshot --version" bash -c "/usr/bin/kata-snapshot --version | grep -q 'kata-snapshot $version (commit '"
check "version --json names the archive formats" bash -c \
  '/usr/bin/kata-snapshot version --json | grep -q "\"archive_format\""'
check "the static helper for guest images" bash -c \
  '[ "$(stat -c %a /usr/lib/kata-snapshot/kata-snapshot-helper)" = 755 ] &&
   file /usr/lib/kata-snapshot/kata-snapshot-helper | grep -q "statically linked"'
check "bash completion" bash "$top/tests/shell/completion.sh" /usr/bin/kata-snapshot \
  /usr/share/bash-completion/completions/kata-snapshot
check "the systemd units" test -f /lib/systemd/system/kata-snapshot@.timer
check "make demo with the installed binary" bash "$top/examples/demo/demo.sh" /usr/bin/kata-snapshot
# lintian: errors fail; the remaining tags are listed in tests/package/lintian-justified, each
# with its reason.
lintian_out=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
unexplained=$(grep -E '^[EW]: ' <<<"$lintian_out" |
  grep -v -F -f <(grep -v '^#' "$top/tests/package/lintian-justified" | cut -d' ' -f1 | sed '/^$/d') || true)
if [ -n "$unexplained" ]; then
  echo "lintian tags not justified in tests/package/lintian-justified:" >&2
  echo "$unexplained" >&2
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi
check "dpkg -r" dpkg -r kata-snapshot
left=()
for f in "${files[@]}"; do
  [ -e "$f" ] && left+=("$f")
done
check "dpkg -r leaves none of the package's files" test "${#left[@]}" -eq 0
[ "${#left[@]}" -eq 0 ] || printf 'left behind: %s\n' "${left[@]}" >&2
echo "package: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

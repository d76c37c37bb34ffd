#!/usr/bin/env bash
# examples/guest-image/add-helper.sh on scratch rootfs directories: with systemd as init (the
# helper, its unit and the kata-containers.target.wants link, with their modes), with the
# agent as init (/sbin/init a script that starts the helper and execs the agent), and the
# refusals (no directory, a dynamically linked helper).
set -uo pipefail
helper=$1
top=$(cd "$(dirname "$0")/../.." && pwd)
add=$top/examples/guest-image/add-helper.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
fail() { echo "FAILED: $*"; failed=1; }
mode() { stat -c %a "$1" 2>/dev/null; }

root=$work/rootfs
mkdir -p "$root/usr/bin"
umask 077 # the script sets modes itself, whatever the umask
"$add" "$root" "$helper" >/dev/null || fail "systemd rootfs: exit $?"
[ "$(mode "$root/usr/bin/kata-snapshot-helper")" = 755 ] || fail "helper mode $(mode "$root/usr/bin/kata-snapshot-helper")"
cmp -s "$helper" "$root/usr/bin/kata-snapshot-helper" || fail "helper content"
unit=$root/usr/lib/systemd/system/kata-snapshot-helper.service
[ "$(mode "$unit")" = 644 ] || fail "unit mode $(mode "$unit")"
grep -q '^WantedBy=kata-containers.target' "$unit" || fail "unit not wanted by kata-containers.target"
link=$root/etc/systemd/system/kata-containers.target.wants/kata-snapshot-helper.service
[ "$(readlink "$link")" = /usr/lib/systemd/system/kata-snapshot-helper.service ] || fail "wants link: $(readlink "$link")"

initrd=$work/initrd
mkdir -p "$initrd/bin" "$initrd/sbin" "$initrd/usr/bin"
printf '#!/bin/sh\n' >"$initrd/bin/sh" && chmod 755 "$initrd/bin/sh"
printf 'agent' >"$initrd/usr/bin/kata-agent" && chmod 755 "$initrd/usr/bin/kata-agent"
ln -s ../usr/bin/kata-agent "$initrd/sbin/init"
"$add" --agent-init "$initrd" "$helper" >/dev/null || fail "agent-init rootfs: exit $?"
[ "$(mode "$initrd/sbin/init")" = 755 ] || fail "init mode $(mode "$initrd/sbin/init")"
grep -q '^/usr/bin/kata-snapshot-helper .*&$' "$initrd/sbin/init" || fail "init does not start the helper"
grep -q '^exec /usr/bin/kata-agent "\$@"$' "$initrd/sbin/init" || fail "init does not exec the agent: $(cat "$initrd/sbin/init")"
[ -x "$initrd/usr/bin/kata-snapshot-helper" ] || fail "agent-init: no helper"

"$add" "$work/none" "$helper" >/dev/null 2>&1 && fail "a missing rootfs was accepted"
"$add" "$root" /bin/ls >/dev/null 2>&1 && fail "a dynamically linked helper was accepted"
[ "$failed" -eq 0 ] && echo "guest image script: all cases passed"
exit "$failed"

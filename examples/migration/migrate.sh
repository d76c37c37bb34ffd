#!/usr/bin/env bash
# Move a running VM to another host with no file in between:
#   migrate.sh /run/vm/qmp.sock other-host [/run/vm-moved]
# The source stays paused during the transfer. If the load on the destination succeeds the
# source is quit; if it fails the source is resumed, so the VM is never lost.
# Needs socat on the source host for the two QMP commands.
set -euo pipefail
qmp=${1:?QMP socket}; host=${2:?destination host}; run=${3:-/run/kata-snapshot/migrated}
qmp_cmd() { printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$1" | socat - "UNIX-CONNECT:$qmp" >/dev/null; }
if kata-snapshot save --qmp "$qmp" -o - --after pause -q | ssh "$host" kata-snapshot load - --run-dir "$run" --json; then
  qmp_cmd quit
  echo "migrated to $host" >&2
else
  qmp_cmd cont
  echo "migration failed; the source VM was resumed" >&2
  exit 1
fi

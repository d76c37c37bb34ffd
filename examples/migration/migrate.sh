#!/usr/bin/env bash
# Move a running VM to another host with no file in between:
#   migrate.sh /run/vm/qmp.sock other-host [/run/vm-moved]
# A live save: the memory leaves while the guest still runs, and the destination starts QEMU
# and feeds it as the bytes arrive. The source stops only at the final switchover and stays
# paused from then on. If the load on the destination succeeds the source is quit; if it
# fails the source is resumed, so the VM is never lost. The guest's pause is the final stop
# plus the tail of the transfer, not the whole transfer.
# Needs socat on the source host for the two QMP commands.
set -euo pipefail
qmp=${1:?QMP socket}; host=${2:?destination host}; run=${3:-/run/kata-snapshot/migrated}
qmp_cmd() { printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$1" | socat - "UNIX-CONNECT:$qmp" >/dev/null; }
if kata-snapshot save --qmp "$qmp" -o - --mode live --after pause -q |
  ssh "$host" kata-snapshot load - --run-dir "$run" --json; then
  qmp_cmd quit
  echo "migrated to $host" >&2
else
  qmp_cmd cont
  echo "migration failed; the source VM was resumed" >&2
  exit 1
fi

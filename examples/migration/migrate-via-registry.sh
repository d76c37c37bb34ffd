#!/usr/bin/env bash
# Move a VM to another host through a registry both can reach, with no file on either host:
#   migrate-via-registry.sh /run/vm/qmp.sock other-host registry.example.com/moves/vm [/run/vm-moved]
# The source is saved paused into the registry (its blobs uploaded as they are made), the
# destination loads it straight from the registry, then the source is quit. If the load
# fails, the source is resumed, so the VM is never lost. Both hosts need the registry's
# credentials in their auth files (skopeo login).
# Needs socat on the source host for the two QMP commands.
set -euo pipefail
qmp=${1:?QMP socket}; host=${2:?destination host}; repo=docker://${3:?HOST/REPO}
run=${4:-/run/kata-snapshot/migrated}
tag=move-$(date -u +%Y%m%dT%H%M%SZ)
qmp_cmd() { printf '{"execute":"qmp_capabilities"}\n{"execute":"%s"}\n' "$1" | socat - "UNIX-CONNECT:$qmp" >/dev/null; }
kata-snapshot save --qmp "$qmp" -o "$repo:$tag" --after pause -q
if ssh "$host" kata-snapshot load "$repo:$tag" --run-dir "$run" --json; then
  qmp_cmd quit
  echo "migrated to $host through $repo:$tag" >&2
else
  qmp_cmd cont
  echo "migration failed; the source VM was resumed" >&2
  exit 1
fi

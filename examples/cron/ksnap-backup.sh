#!/usr/bin/env bash
# Nightly snapshot of one VM with retention: run from cron, e.g.
#   15 2 * * * root /usr/local/sbin/ksnap-backup.sh /run/vm/qmp.sock /var/backups/vm 7
# Exit codes are kata-snapshot's (0 ok, 1 failed, 3 bad archive, 4 locked by another run).
set -euo pipefail
qmp=${1:?QMP socket}; dir=${2:?backup directory}; keep=${3:-7}
mkdir -p "$dir"
out="$dir/$(date -u +%Y%m%dT%H%M%SZ).ksnap"
kata-snapshot save --qmp "$qmp" -o "$out" --label origin=cron --json -q > "$out.json"
kata-snapshot verify "$out" -q
# Keep the newest $keep archives.
ls -1t "$dir"/*.ksnap | tail -n +"$((keep + 1))" | while read -r old; do rm -f "$old" "$old.json"; done

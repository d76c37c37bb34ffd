#!/usr/bin/env bash
# Nightly snapshot of one VM into a repository, with retention: run from cron, e.g.
#   15 2 * * * root /usr/local/sbin/ksnap-backup.sh /run/vm/qmp.sock /var/backups/vm
# Each night stores only what changed since the snapshots already there. Keeps 7 nights,
# 4 weeks and 6 months (restic's rules), then frees the blobs nothing needs any more.
# Exit codes are kata-snapshot's (0 ok, 1 failed, 3 damaged repository, 4 locked too long).
set -euo pipefail
qmp=${1:?QMP socket}; repo=oci:${2:?repository directory}
kata-snapshot save --qmp "$qmp" -o "$repo" --label origin=cron -q
kata-snapshot prune "$repo" --keep-daily "${KEEP_DAILY:-7}" --keep-weekly "${KEEP_WEEKLY:-4}" \
  --keep-monthly "${KEEP_MONTHLY:-6}" -q
kata-snapshot gc "$repo" -q
kata-snapshot check "$repo" -q

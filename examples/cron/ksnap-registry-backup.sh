#!/usr/bin/env bash
# Nightly snapshot of one VM into an OCI registry that every host backs up into, e.g.
#   15 2 * * * root /usr/local/sbin/ksnap-registry-backup.sh /run/vm/qmp.sock registry.example.com/backups/vm
# Credentials come from the auth file `skopeo login --authfile /etc/kata-snapshot/auth.json`
# wrote (never from the command line of a cron job); a private CA from /etc/kata-snapshot/certs.
# Each night uploads only the chunks the registry does not hold yet. Keeps 7 nights and 4
# weeks; the registry's own garbage collection frees the blobs of pruned snapshots.
# Exit codes are kata-snapshot's: 5 registry unreachable, 6 credentials refused, 7 no such
# repository, 8 certificate not trusted (docs/registries.md).
set -euo pipefail
qmp=${1:?QMP socket}; repo=docker://${2:?HOST/REPO}
access=(--authfile "${KSNAP_AUTHFILE:-/etc/kata-snapshot/auth.json}")
[ -d /etc/kata-snapshot/certs ] && access+=(--cert-dir /etc/kata-snapshot/certs)
kata-snapshot save --qmp "$qmp" -o "$repo" --label origin=cron --label host="$(hostname)" "${access[@]}" -q
kata-snapshot prune "$repo" --keep-daily "${KEEP_DAILY:-7}" --keep-weekly "${KEEP_WEEKLY:-4}" "${access[@]}" -q

#!/usr/bin/env bash
# Adds the kata-snapshot guest helper to a Kata guest rootfs directory, as built by Kata's
# osbuilder (rootfs.sh) before image_builder.sh or initrd_builder.sh packs it.
#   add-helper.sh ROOTFS [HELPER]             systemd as init: the helper and its unit, enabled
#                                             in kata-containers.target
#   add-helper.sh --agent-init ROOTFS [HELPER] the agent as init (AGENT_INIT=yes, initrd images):
#                                             /sbin/init becomes a script that starts the helper,
#                                             then execs the agent as PID 1 (needs /bin/sh)
# HELPER defaults to the installed /usr/lib/kata-snapshot/kata-snapshot-helper. See
# docs/guest-image.md.
set -euo pipefail
agent_init=0
if [ "${1:-}" = --agent-init ]; then
  agent_init=1
  shift
fi
rootfs=${1:?usage: add-helper.sh [--agent-init] ROOTFS [HELPER]}
helper=${2:-/usr/lib/kata-snapshot/kata-snapshot-helper}
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$rootfs" ] || { echo "add-helper: $rootfs is not a directory" >&2; exit 2; }
[ -x "$helper" ] || { echo "add-helper: no helper binary at $helper" >&2; exit 2; }
if ! file "$helper" 2>/dev/null | grep -q 'statically linked'; then
  echo "add-helper: $helper is not statically linked; the guest has none of the host's libraries" >&2
  exit 2
fi
install -D -m 0755 "$helper" "$rootfs/usr/bin/kata-snapshot-helper"
if [ "$agent_init" -eq 0 ]; then
  install -D -m 0644 "$here/kata-snapshot-helper.service" "$rootfs/usr/lib/systemd/system/kata-snapshot-helper.service"
  install -d -m 0755 "$rootfs/etc/systemd/system/kata-containers.target.wants"
  ln -sfn /usr/lib/systemd/system/kata-snapshot-helper.service \
    "$rootfs/etc/systemd/system/kata-containers.target.wants/kata-snapshot-helper.service"
  echo "add-helper: $rootfs: helper and unit installed, wanted by kata-containers.target"
  exit 0
fi
[ -x "$rootfs/bin/sh" ] || { echo "add-helper: $rootfs has no /bin/sh for the init script" >&2; exit 2; }
# The agent stays PID 1 (exec); keep what /sbin/init pointed to as the agent to exec.
agent=$(readlink -f "$rootfs/sbin/init" 2>/dev/null || true)
agent=${agent#"$(readlink -f "$rootfs")"}
case "$agent" in
  "" | /sbin/init) agent=/usr/bin/kata-agent ;;
esac
rm -f "$rootfs/sbin/init"
printf '#!/bin/sh\n# kata-snapshot: the guest helper next to the agent, which stays PID 1.\n/usr/bin/kata-snapshot-helper </dev/null >/dev/null 2>&1 &\nexec %s "$@"\n' \
  "$agent" >"$rootfs/sbin/init"
chmod 0755 "$rootfs/sbin/init"
echo "add-helper: $rootfs: helper installed, /sbin/init starts it and execs $agent"

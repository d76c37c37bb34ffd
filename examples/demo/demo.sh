#!/usr/bin/env bash
# The main job, end to end, on the bundled demo guest: boot it, save it, kill it, load it,
# and show that the guest carried on (its in-memory counter continues, no reboot).
# Usage: demo.sh PATH/TO/kata-snapshot   (run by `make demo`, which builds everything first)
set -euo pipefail

cli=$(realpath "${1:?usage: demo.sh KATA_SNAPSHOT_BINARY}")
top=$(cd "$(dirname "$0")/../.." && pwd)
guest=$top/.cache/guest/current
vfsd=$top/.cache/bin/virtiofsd
work=$(mktemp -d /tmp/ksnap-demo-XXXXXX)
qemu_pid=
cleanup() {
  [ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null || true
  [ -f "$work/run/qemu.pid" ] && kill -9 "$(cat "$work/run/qemu.pid")" 2>/dev/null || true
  pkill -9 -f "$work/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi # no escapes in logs
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
last_tick() { tr -d '\r' < "$work/console.log" | sed -n 's/^ksnap: tick //p' | tail -n1; }
wait_for() { # wait_for PATTERN [FROM_LINE]: poll the console until PATTERN shows up after line FROM_LINE
  for _ in $(seq 1 600); do
    [ -f "$work/console.log" ] && tr -d '\r' < "$work/console.log" | tail -n +"${2:-1}" | grep -q "$1" && return 0
    sleep 0.1
  done
  echo "demo: the guest did not print '$1'" >&2; exit 1
}

say "1. Boot the demo guest (Debian kernel, busybox, kata-snapshot-helper) under QEMU/TCG"
qemu-system-x86_64 -name ksnap-demo -machine q35,accel=tcg -cpu max -m 256M -nodefaults -no-user-config \
  -display none -no-reboot -kernel "$guest/vmlinuz" -initrd "$guest/initrd" \
  -append "console=ttyS0 quiet panic=-1 ksnap.workload=counter" \
  -chardev "file,id=con,path=$work/console.log,append=on" -serial chardev:con \
  -device virtio-serial-pci,id=serial0 \
  -chardev "socket,id=charhelper,path=$work/helper.sock,server=on,wait=off" \
  -device virtserialport,bus=serial0.0,chardev=charhelper,name=org.kata-snapshot.helper.0 \
  -qmp "unix:$work/qmp.sock,server=on,wait=off" >"$work/qemu.log" 2>&1 &
qemu_pid=$!
wait_for "ksnap: tick 5"
echo "guest is counting in memory: $(tr -d '\r' < "$work/console.log" | grep tick | tail -n3 | tr '\n' ' ')"
"$cli" guest ping --qmp "$work/qmp.sock"

say "2. Save the whole VM live (RAM, vCPUs, devices): the guest keeps counting while it is saved"
lines=$(tr -d '\r' < "$work/console.log" | wc -l)
"$cli" save --qmp "$work/qmp.sock" -o "$work/demo.ksnap" --mode live --after pause --json >"$work/save.json" &
save_pid=$!
while kill -0 "$save_pid" 2>/dev/null; do # the guest's output while the save runs
  tr -d '\r' < "$work/console.log" | tail -n +"$((lines + 1))" | { grep tick || true; } | sed 's/^/  during the save: /'
  lines=$(tr -d '\r' < "$work/console.log" | wc -l)
  sleep 0.1
done
wait "$save_pid"
sed -n 's/.*"qemu_downtime_seconds": *\([0-9.]*\).*/the guest was stopped only for the final switchover: \1 s (QEMU'"'"'s measure)/p' "$work/save.json"
echo "(--after pause keeps it stopped at that instant, as a migration to another host would)"
saved=$(last_tick)
lines=$(tr -d '\r' < "$work/console.log" | wc -l)
echo "the snapshot holds the counter at $saved"
"$cli" inspect "$work/demo.ksnap"
"$cli" verify "$work/demo.ksnap" --host

say "3. Kill QEMU (as a crash or a host move would)"
kill -9 "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=
echo "QEMU is gone"

say "4. Load the archive into a new QEMU"
"$cli" load "$work/demo.ksnap" --run-dir "$work/run"

say "5. The guest carried on where it was"
wait_for "ksnap: tick $((saved + 3))" "$((lines + 1))"
after=$(tr -d '\r' < "$work/console.log" | tail -n +"$((lines + 1))")
if grep -q "ksnap: boot" <<<"$after"; then echo "demo: FAILED: the guest rebooted" >&2; exit 1; fi
first=$(sed -n 's/^ksnap: tick //p' <<<"$after" | head -n1)
echo "saved at tick $saved; the restored guest printed tick $first next, then: $(grep tick <<<"$after" | head -n4 | tail -n3 | tr '\n' ' ')"
[ "$first" = "$((saved + 1))" ] || { echo "demo: FAILED: expected tick $((saved + 1))" >&2; exit 1; }
"$cli" guest ping --qmp "$work/run/qmp.sock"
say "demo: OK - the restored VM continued from the snapshot"

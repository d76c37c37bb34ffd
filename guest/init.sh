#!/bin/busybox sh
# /init of the kata-snapshot test guest: busybox userland, virtio modules, the helper, and
# one workload chosen with ksnap.workload=NAME on the kernel command line.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /tmp /mnt
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m" 2>/dev/null; done
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm

arg() { sed -n "s/.*\bksnap\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
workload=$(arg workload)
echo "ksnap: boot workload=${workload:-idle} cpus=$(grep -c ^processor /proc/cpuinfo)"

/bin/kata-snapshot-helper 2>/dev/console &
# ksnap.helper=stopped: a silent helper (SIGSTOP), for the host's timeout handling.
[ "$(arg helper)" = stopped ] && sleep 1 && kill -STOP $! && echo "ksnap: helper stopped"

case "$workload" in
counter)
  # An in-memory counter: after a restore it must carry on, never restart.
  echo "ksnap: ready"
  i=0
  while :; do i=$((i + 1)); echo "ksnap: tick $i"; sleep 0.2; done
  ;;
share)
  # Mount the virtio-fs share and show a file the host wrote.
  mount -t virtiofs kataShared /mnt && echo "ksnap: share mounted"
  echo "ksnap: share says $(cat /mnt/hello.txt)"
  echo "ksnap: ready"
  i=0
  while :; do i=$((i + 1)); echo "ksnap: tick $i"; sleep 0.2; done
  ;;
disk)
  # An ext4 file system on the virtio-blk disk, written to continuously: a frozen file system
  # blocks the writer until it is thawed.
  mkdir -p /data && mount -t ext4 /dev/vda /data && echo "ksnap: disk mounted"
  echo "ksnap: ready"
  i=0
  while :; do i=$((i + 1)); echo "write $i" >> /data/log; echo "ksnap: wrote $i"; sleep 0.2; done
  ;;
clock)
  # The guest's wall clock, for the post-restore clock refresh.
  echo "ksnap: ready"
  while :; do echo "ksnap: clock $(date +%s)"; sleep 0.5; done
  ;;
bench)
  # Fill guest RAM with a mix of random and compressible data, then count.
  head -c "$(arg random_mb)M" /dev/urandom > /dev/shm/random
  yes "kata-snapshot benchmark line $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' ')" |
    head -c "$(arg text_mb)M" > /dev/shm/text
  echo "ksnap: filled $(du -sm /dev/shm | cut -f1) MB"
  echo "ksnap: ready"
  i=0
  while :; do i=$((i + 1)); echo "ksnap: tick $i"; sleep 1; done
  ;;
*)
  echo "ksnap: ready"
  exec sh -c 'while :; do sleep 3600; done'
  ;;
esac

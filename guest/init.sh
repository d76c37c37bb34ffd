#!/bin/busybox sh
# /init of the kata-snapshot test guest: busybox userland, virtio modules, the helper, and
# one workload chosen with ksnap.workload=NAME on the kernel command line.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /tmp /mnt
mount -t proc proc /proc
arg() { sed -n "s/.*\bksnap\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
# Container mode: CRIU and pivot_root do not work on an initramfs root, so the guest first
# moves onto a tmpfs, as a real guest image's root is a real file system.
if [ "$(arg workload)" = containers ] && [ ! -e /.ksnap-tmpfs-root ]; then
  mkdir -p /newroot && mount -t tmpfs -o mode=0755 root /newroot
  for d in /*; do
    case "$d" in /proc|/newroot) ;; *) cp -a "$d" /newroot/ ;; esac
  done
  touch /newroot/.ksnap-tmpfs-root
  umount /proc
  exec switch_root /newroot /init
fi
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
for m in $(cat /lib/modules/load-order); do insmod "/lib/modules/$m" 2>/dev/null; done
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm

workload=$(arg workload)
echo "ksnap: boot workload=${workload:-idle} cpus=$(grep -c ^processor /proc/cpuinfo)"

/bin/kata-snapshot-helper 2>/dev/console &
# ksnap.helper=stopped: a silent helper (SIGSTOP), for the host's timeout handling.
[ "$(arg helper)" = stopped ] && sleep 1 && kill -STOP $! && echo "ksnap: helper stopped"
# ksnap.helper=restart-when-frozen: kill the helper once a freeze is in place and start a new
# one, which must pick the freeze up from its state file.
# ksnap.helper=kill-during-dump: kill the helper while CRIU dumps a container (CRIU goes on
# by itself), and start a new one 5 s later.
if [ "$(arg helper)" = kill-during-dump ]; then
  helper=$!
  (until ls /run/kata-snapshot/checkpoint/*/dump.log >/dev/null 2>&1; do usleep 20000; done
   kill -9 "$helper"; echo "ksnap: helper killed during a dump"
   sleep 5; /bin/kata-snapshot-helper 2>/dev/console &) &
fi
if [ "$(arg helper)" = restart-when-frozen ]; then
  helper=$!
  # The state file is written just before the reply: give the reply a second to go out (a
  # kill before it leaves the host waiting 30 s for an answer that never comes).
  (while [ ! -f /run/kata-snapshot-helper.state ]; do sleep 0.2; done
   sleep 1; kill -9 "$helper"; /bin/kata-snapshot-helper 2>/dev/console &
   echo "ksnap: helper restarted") &
fi


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
vfs)
  # Open files on virtio-fs across a snapshot: an append fd, a read fd, a file deleted while
  # open, and a working directory in the share. Any I/O error is printed as "ksnap: EIO".
  mount -t virtiofs kataShared /mnt && echo "ksnap: share mounted"
  mkdir -p /mnt/work
  (exec 3>>/mnt/append.log; i=0
   while :; do i=$((i + 1)); echo "line $i" >&3 || echo "ksnap: EIO append"; echo "ksnap: appended $i"; sleep 0.2; done) &
  (exec 4</mnt/numbers.txt
   while read -r n <&4; do echo "ksnap: read $n"; sleep 0.2; done; echo "ksnap: read EOF") &
  (exec 5<>/mnt/deleted.tmp; rm /mnt/deleted.tmp; i=0
   while :; do i=$((i + 1)); echo "d $i" >&5 && echo "ksnap: deleted-write $i" || echo "ksnap: EIO deleted"; sleep 1; done) &
  (cd /mnt/work; i=0
   while :; do i=$((i + 1)); echo "$i" > cwdfile && ls > /dev/null && echo "ksnap: cwd $i" || echo "ksnap: EIO cwd"; sleep 1; done) &
  echo "ksnap: ready"
  wait
  ;;
live)
  # Writers of the share and of guest memory during a live save, each checking what it sees:
  # a journal appended through an fd opened at boot, a reader that checksums big.bin with the
  # page cache dropped (so virtiofsd writes guest memory all the time), and a file rewritten
  # and read back. Any surprise is printed as "ksnap: BAD ..." and any I/O error as "ksnap: EIO".
  mount -t virtiofs kataShared /mnt && echo "ksnap: share mounted"
  want=$(cat /mnt/big.md5)
  (exec 3>>/mnt/journal; i=0
   while :; do i=$((i + 1)); echo "j $i" >&3 || echo "ksnap: EIO journal"; echo "ksnap: journal $i"; sleep 0.05; done) &
  (n=0
   while :; do
     n=$((n + 1)); echo 3 > /proc/sys/vm/drop_caches
     sum=$(md5sum < /mnt/big.bin) || echo "ksnap: EIO big"
     [ "${sum%% *}" = "$want" ] && echo "ksnap: sum ok $n" || echo "ksnap: BAD sum $n ${sum%% *}"
   done) &
  (k=0; echo "version 0" > /mnt/rewrite.txt
   while :; do
     have=$(cat /mnt/rewrite.txt) || echo "ksnap: EIO rewrite"
     [ "$have" = "version $k" ] || echo "ksnap: BAD rewrite have=$have want=version $k"
     k=$((k + 1)); echo "version $k" > /mnt/rewrite.new && mv /mnt/rewrite.new /mnt/rewrite.txt || echo "ksnap: EIO mv"
     echo "ksnap: rewrite $k"; sleep 0.1
   done) &
  echo "ksnap: ready"
  wait
  ;;
dirty)
  # Dirties 16 MiB of memory with random data over and over, as fast as the vCPU can.
  echo "ksnap: ready"
  while :; do head -c 16777216 /dev/urandom > /dev/shm/dirty; echo "ksnap: dirtied"; done
  ;;
bench-share)
  # A virtio-fs share that changes while it is saved: hot.bin (1 MiB) rewritten every 0.1 s,
  # and a pulse line every 10 ms whose gaps the host times.
  mount -t virtiofs kataShared /mnt && echo "ksnap: share mounted"
  (while :; do echo "ksnap: pulse"; usleep 10000; done) &
  (while :; do dd if=/dev/urandom of=/mnt/hot.bin bs=65536 count=16 conv=notrunc 2>/dev/null; usleep 100000; done) &
  echo "ksnap: ready"
  wait
  ;;
devices)
  # What the guest sees of devices hot-plugged over QMP: CPUs and memory (onlined here, as
  # udev would), and a virtio-blk disk whose ext4 holds hello.txt.
  echo "ksnap: ready"
  i=0
  while :; do
    i=$((i + 1))
    for c in /sys/devices/system/cpu/cpu[0-9]*/online; do [ "$(cat "$c")" = 0 ] && echo 1 > "$c"; done
    for m in /sys/devices/system/memory/memory*/state; do [ "$(cat "$m")" = offline ] && echo online > "$m"; done
    disk=none
    if [ -b /dev/vda ]; then
      mountpoint -q /data || { mkdir -p /data; mount -t ext4 /dev/vda /data; }
      disk=$(cat /data/hello.txt 2>/dev/null || echo unreadable)
    fi
    # NICs: one with a MAC ending in :XX gets 10.91.XX.2/24 (XX in decimal; the host side of
    # its tap is 10.91.XX.1), whatever order the hot-plugged ones were probed in.
    net=none
    for n in /sys/class/net/eth*; do
      [ -e "$n" ] || continue
      dev=${n##*/}
      mac=$(cat "$n/address")
      ip -4 addr show dev "$dev" | grep -q inet || {
        ip addr add "10.91.$((0x${mac##*:})).2/24" dev "$dev"; ip link set "$dev" up; }

      net="${net#none}${net:+,}$dev@$(cat "$n/address")"
    done
    net=${net#,}
    echo "ksnap: devices $i cpus=$(grep -c ^processor /proc/cpuinfo) mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) disk=$disk net=$net"

    sleep 0.5
  done
  ;;
bench)


  # Fill guest RAM with a mix of random and compressible data, then count.
  mount -o remount,size=90% /dev/shm
  head -c $(($(arg random_mb) * 1048576)) /dev/urandom > /dev/shm/random
  yes "kata-snapshot benchmark line $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' ')" |
    head -c $(($(arg text_mb) * 1048576)) > /dev/shm/text

  echo "ksnap: filled $(du -sm /dev/shm | cut -f1) MB"
  # ksnap.pulse_ms=N: a line every N ms, whose gaps the host times (a live save's pause).
  pulse=$(arg pulse_ms)
  [ -n "$pulse" ] && (while :; do echo "ksnap: pulse"; usleep $((pulse * 1000)); done) &
  echo "ksnap: ready"
  i=0
  while :; do i=$((i + 1)); echo "ksnap: tick $i"; sleep 1; done
  ;;
containers)
  # Containers laid out as Kata's agent lays them out: the virtio-fs share on
  # /run/kata-containers/shared/containers, each container's bundle in
  # /run/kata-containers/CID (config.json, rootfs bind-mounted from the share), and its cgroup
  # (v2) at the spec's cgroupsPath. Every container in the share gets a bundle; those named in
  # ksnap.containers=A,B also run, with their own pid, mount, uts and ipc namespaces and a
  # pivot_root into the rootfs, as an OCI runtime starts them. (A stand-in for the agent's
  # runtime: process.args is read from a one-line config.json.)
  # ksnap.criu_modules=no leaves out the modules CRIU needs, for the refusal it must give.
  # (Without initrd-criu there is no CRIU at all: the other refusal.)
  if [ -f /lib/modules/load-order-criu ] && [ "$(arg criu_modules)" != no ]; then
    for m in $(cat /lib/modules/load-order-criu); do insmod "/lib/modules/$m" 2>/dev/null; done
  fi
  ip link set lo up
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  shared=/run/kata-containers/shared/containers
  mkdir -p "$shared" && mount -t virtiofs kataShared "$shared" && echo "ksnap: share mounted"
  for dir in "$shared"/*/; do
    cid=$(basename "$dir"); b=/run/kata-containers/$cid
    [ -f "$dir/config.json" ] || continue
    mkdir -p "$b/rootfs" && mount --bind "$dir/rootfs" "$b/rootfs" && cp "$dir/config.json" "$b/config.json"
  done
  for cid in $(arg containers | tr , ' '); do
    b=/run/kata-containers/$cid
    cg=/sys/fs/cgroup$(sed -n 's/.*"cgroupsPath": *"\([^"]*\)".*/\1/p' "$b/config.json")
    args=$(sed -n 's/.*"args": *\[\([^]]*\)\].*/\1/p' "$b/config.json" | tr ',' ' ' | tr -d '"')
    mkdir -p "$cg"
    (unshare --fork --pid --mount --uts --ipc sh -c "
      echo 0 > $cg/cgroup.procs && mount --make-rprivate / && cd $b/rootfs &&
      mount -t proc proc proc && mount -t tmpfs -o mode=0755 dev dev && mount -t tmpfs run run &&
      mknod -m 666 dev/null c 1 3 && hostname $cid && pivot_root . .oldroot &&
      exec /bin/busybox sh -c 'umount -l /.oldroot && exec $args </dev/null >/dev/null 2>&1'" \
      </dev/null 2>/dev/console >&2 || echo "ksnap: container $cid ended ($?)") &
  done
  # ksnap.pause=A,B: those are then paused, as containerd pauses one (cgroup.freeze).
  for cid in $(arg pause | tr , ' '); do
    cg=/sys/fs/cgroup$(sed -n 's/.*"cgroupsPath": *"\([^"]*\)".*/\1/p' "/run/kata-containers/$cid/config.json")
    (sleep 2; echo 1 > "$cg/cgroup.freeze") &
  done
  echo "ksnap: ready"
  # What the guest shows: its own counter (a bystander that must never be disturbed) and each
  # container's /run/tick, read through a process of its cgroup.
  i=0
  while :; do
    i=$((i + 1)); echo "ksnap: tick $i"
    for b in /run/kata-containers/*/config.json; do
      [ -f "$b" ] || continue
      b=${b%/config.json}; cid=${b##*/}
      cg=/sys/fs/cgroup$(sed -n 's/.*"cgroupsPath": *"\([^"]*\)".*/\1/p' "$b/config.json")
      p=$(head -n1 "$cg/cgroup.procs" 2>/dev/null)
      t=$([ -n "$p" ] && cat "/proc/$p/root/run/tick" 2>/dev/null)
      echo "ksnap: ctr $cid ${t:-none}$([ "$(cat "$cg/cgroup.freeze" 2>/dev/null)" = 1 ] && echo " frozen")"
    done
    sleep 0.5
  done
  ;;
*)
  echo "ksnap: ready"
  exec sh -c 'while :; do sleep 3600; done'
  ;;
esac

#!/usr/bin/env bash
# Builds the test/demo guest: Debian's kernel plus a busybox initramfs carrying the virtio
# modules (in dependency order), kata-snapshot-helper and guest/init.sh; and initrd-criu, the
# same with an overlay for container mode: CRIU 4.1 from trixie with the libraries it loads,
# GNU tar and gzip, CRIU's config and the modules CRIU needs (a second cpio archive appended,
# which the kernel unpacks over the first).
# Usage: build-guest.sh HELPER_BINARY [CTR_COUNTER_BINARY]. Output:
# .cache/guest/current/{vmlinuz,initrd,initrd-criu,ctr-counter}, cached by the content hash
# of every input.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${KSNAP_CACHE:-$top/.cache}
helper=${1:?usage: build-guest.sh HELPER_BINARY [CTR_COUNTER_BINARY]}
counter=${2:-}
criu_root=$cache/criu
kroot=$cache/kernel
kver=$(basename "$(ls -d "$kroot"/lib/modules/* | head -n1)")
modules=(virtio_pci virtio_console virtiofs virtio_blk virtio_net virtio_rng ext4)
# What CRIU needs loaded before `criu check` passes (there is no modprobe in the guest).
criu_modules=(unix_diag inet_diag tcp_diag udp_diag raw_diag af_packet_diag netlink_diag
              crc32c_generic libcrc32c nfnetlink nf_tables)

hash=$( (cat "$0" "$top/guest/init.sh" "$helper" /bin/busybox ${counter:+"$counter"}
         cat "$criu_root/usr/sbin/criu" 2>/dev/null; echo "$kver ${modules[*]} ${criu_modules[*]}") |
        sha256sum | cut -c1-16)
out=$cache/guest/$hash
if [ ! -f "$out/initrd" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  root=$work/root
  mkdir -p "$root"/{bin,lib/modules,proc,sys,dev,run,tmp,mnt}
  cp /bin/busybox "$root/bin/busybox"
  cp "$top/guest/init.sh" "$root/init"
  strip -o "$root/bin/kata-snapshot-helper" "$helper"
  chmod 0755 "$root/init" "$root/bin/"*
  [ -f "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"
  # copy_modules DIR LIST NAME...: the modules and what they depend on, in load order and
  # deduplicated (against modules already in DIR too), into DIR with their names in DIR/LIST.
  copy_modules() {
    local dir=$1 list=$2 path name; shift 2
    for m in "$@"; do modprobe -d "$kroot" -S "$kver" --show-depends "$m"; done |
      awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > "$work/paths"
    : > "$dir/$list"
    while read -r path; do
      name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
      [ -f "$root/lib/modules/$name" ] && continue
      case "$path" in
        *.ko.xz) xz -dc "$path" > "$dir/$name" ;;
        *.ko.zst) zstd -qdc "$path" > "$dir/$name" ;;
        *) cp "$path" "$dir/$name" ;;
      esac
      echo "$name" >> "$dir/$list"
    done < "$work/paths"
  }
  copy_modules "$root/lib/modules" load-order "${modules[@]}"
  mkdir -p "$out.tmp"
  (cd "$root" && find . | sort | cpio --quiet -o -H newc --owner=0:0) > "$out.tmp/initrd"
  cp "$kroot/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"

  # The container-mode overlay, when CRIU was downloaded (scripts/deps.sh).
  if [ -x "$criu_root/usr/sbin/criu" ]; then
    over=$work/criu
    lib=$criu_root/usr/lib/x86_64-linux-gnu
    mkdir -p "$over"/{bin,usr/sbin,lib64,usr/lib/x86_64-linux-gnu,lib/modules,etc/criu}
    cp "$criu_root/usr/sbin/criu" "$over/usr/sbin/criu"
    cp "$criu_root/usr/bin/tar" "$criu_root/usr/bin/gzip" "$over/bin/"
    # The libraries these programs load, followed through their own NEEDED entries.
    todo=("$over/usr/sbin/criu" "$over/bin/tar" "$over/bin/gzip")
    while [ "${#todo[@]}" -gt 0 ]; do
      f=${todo[0]}; todo=("${todo[@]:1}")
      for so in $(objdump -p "$f" | awk '$1 == "NEEDED" { print $2 }'); do
        [ -e "$over/usr/lib/x86_64-linux-gnu/$so" ] && continue
        [ -e "$lib/$so" ] || { echo "build-guest: $so (needed by $(basename "$f")) is not in $lib" >&2; exit 1; }
        cp -L "$lib/$so" "$over/usr/lib/x86_64-linux-gnu/$so"
        todo+=("$over/usr/lib/x86_64-linux-gnu/$so")
      done
    done
    cp -L "$lib/ld-linux-x86-64.so.2" "$over/lib64/ld-linux-x86-64.so.2"
    printf '%s\n' "# kata-snapshot test guest: CRIU locks the network with nftables (no iptables here)." \
      "network-lock nftables" > "$over/etc/criu/default.conf"
    copy_modules "$over/lib/modules" load-order-criu "${criu_modules[@]}"
    (cd "$over" && find . | sort | cpio --quiet -o -H newc --owner=0:0) > "$work/criu.cpio"
    cat "$out.tmp/initrd" "$work/criu.cpio" > "$out.tmp/initrd-criu"
  fi
  [ -n "$counter" ] && cp "$counter" "$out.tmp/ctr-counter"
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "build-guest: built $out ($(wc -l < "$root/lib/modules/load-order") modules$([ -f "$out/initrd-criu" ] && echo ", initrd-criu $(($(stat -c %s "$out/initrd-criu") >> 20)) MiB"))" >&2
fi
ln -sfn "$hash" "$cache/guest/current"

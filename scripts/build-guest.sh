#!/usr/bin/env bash
# Builds the test/demo guest: Debian's kernel plus a busybox initramfs carrying the virtio
# modules (in dependency order), kata-snapshot-helper and guest/init.sh.
# Usage: build-guest.sh HELPER_BINARY. Output: .cache/guest/current/{vmlinuz,initrd}, cached by
# the content hash of every input.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${KSNAP_CACHE:-$top/.cache}
helper=${1:?usage: build-guest.sh HELPER_BINARY}
kroot=$cache/kernel
kver=$(basename "$(ls -d "$kroot"/lib/modules/* | head -n1)")
modules=(virtio_pci virtio_console virtiofs virtio_blk virtio_net virtio_rng ext4)

hash=$( (cat "$0" "$top/guest/init.sh" "$helper" /bin/busybox; echo "$kver ${modules[*]}") |
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
  # insmod lines in load order, deduplicated; modules may be compressed.
  for m in "${modules[@]}"; do modprobe -d "$kroot" -S "$kver" --show-depends "$m"; done |
    awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > "$work/paths"
  : > "$root/lib/modules/load-order"
  while read -r path; do
    name=$(basename "$path")
    case "$name" in
      *.ko.xz) xz -dc "$path" > "$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
      *.ko.zst) zstd -qdc "$path" > "$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
      *) cp "$path" "$root/lib/modules/$name" ;;
    esac
    echo "$name" >> "$root/lib/modules/load-order"
  done < "$work/paths"
  mkdir -p "$out.tmp"
  (cd "$root" && find . | sort | cpio --quiet -o -H newc --owner=0:0) > "$out.tmp/initrd"
  cp "$kroot/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "build-guest: built $out ($(wc -l < "$root/lib/modules/load-order") modules)" >&2
fi
ln -sfn "$hash" "$cache/guest/current"

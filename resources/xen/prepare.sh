#!/usr/bin/env bash
# Build a real Xen 4.17 machine, emulated by QEMU TCG, that produces `xl save` streams
# for tests (issue 16: a guest saved on Xen restores on xenkvm). From Debian packages:
#   $CACHE/xen/xen          Xen 4.17's hypervisor (bookworm's xen-hypervisor-4.17-amd64,
#                           ungzipped: QEMU boots it as a multiboot kernel)
#   $CACHE/xen/root.ext4    bookworm minbase + xen-utils-4.17 (xl, xenstored,
#                           xenconsoled) + the dom0 kernel's modules
#   $CACHE/xen/initrd.cpio  busybox, dom0.init and the modules dom0 needs first
#   $CACHE/xen/guest.cpio.gz  the domU's initramfs: busybox and counter.init
# Dom0's kernel is the nested host's 6.12 (resources/nested/prepare.sh builds it; it has
# CONFIG_XEN_DOM0); the domU kernel is the Debian cloud kernel of get-assets.sh.
# Idempotent; FORCE=1 rebuilds. Root only. run.sh boots it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/../cache}"
N="$CACHE/nested"
X="$CACHE/xen"
MIRROR="${XENKVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MODULES="virtio_blk ext4 xen-evtchn xenfs xen-privcmd xen-gntdev xen-gntalloc"
log() { printf '[xen] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
[ -s "$N/vmlinuz" ] && [ -d "$N/kernel/lib/modules" ] ||
    bash "$here/../nested/prepare.sh"
[ "${FORCE:-0}" = 1 ] && rm -rf "$X"
mkdir -p "$X"
kv="$(ls "$N/kernel/lib/modules")"

# --- dom0 root with Xen's tools and the hypervisor package ---
if [ ! -s "$X/root.ext4" ]; then
    rm -rf "$X/root"
    debootstrap --variant=minbase --include=kmod,xen-utils-4.17,xen-hypervisor-4.17-amd64 \
        bookworm "$X/root" "$MIRROR" >&2
    mkdir -p "$X/root/lib/modules"
    cp -a "$N/kernel/lib/modules/$kv" "$X/root/lib/modules/"
    chroot "$X/root" depmod "$kv"
    mkfs.ext4 -q -F -L xenkvm-dom0 -d "$X/root" "$X/root.ext4.tmp" 3G
    mv "$X/root.ext4.tmp" "$X/root.ext4"
fi

# --- the hypervisor, as QEMU's multiboot loader takes it ---
if [ ! -s "$X/xen" ]; then
    gz="$(ls "$X"/root/boot/xen-4.17*-amd64.gz | head -n1)"
    gzip -dc "$gz" >"$X/xen.tmp"
    mv "$X/xen.tmp" "$X/xen"
    log "hypervisor: $(basename "$gz")"
fi

# --- dom0 initramfs ---
if [ ! -s "$X/initrd.cpio" ] || [ "$here/dom0.init" -nt "$X/initrd.cpio" ] || [ "$0" -nt "$X/initrd.cpio" ]; then
    t="$X/initrd.d"
    rm -rf "$t"
    mkdir -p "$t"/{bin,proc,sys,dev,root,job,lib/modules}
    cp "$N/kernel/bin/busybox" "$t/bin/busybox"
    cp "$here/dom0.init" "$t/init"
    chmod +x "$t/init"
    : >"$t/lib/modules/order"
    for m in $MODULES; do
        chroot "$X/root" modprobe --show-depends "$m" -S "$kv" | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++' | while read -r p; do
        b="$(basename "$p")"
        b="${b%.xz}"
        if [ ! -e "$t/lib/modules/$b" ]; then
            if [[ "$p" == *.xz ]]; then xz -dc "$X/root$p" >"$t/lib/modules/$b"; else cp "$X/root$p" "$t/lib/modules/$b"; fi
            echo "$b" >>"$t/lib/modules/order"
        fi
    done
    (cd "$t" && find . | cpio -o -H newc --quiet) >"$X/initrd.cpio.tmp"
    mv "$X/initrd.cpio.tmp" "$X/initrd.cpio"
fi

# --- the domU's initramfs ---
if [ ! -s "$X/guest.cpio.gz" ] || [ "$here/counter.init" -nt "$X/guest.cpio.gz" ]; then
    t="$X/guest.d"
    rm -rf "$t"
    mkdir -p "$t"/{bin,proc,sys,dev,tmp}
    cp "$N/kernel/bin/busybox" "$t/bin/busybox"
    cp "$here/counter.init" "$t/init"
    chmod +x "$t/init"
    (cd "$t" && find . | cpio -o -H newc --quiet | gzip -9) >"$X/guest.cpio.gz.tmp"
    mv "$X/guest.cpio.gz.tmp" "$X/guest.cpio.gz"
fi
log "ready in $X"

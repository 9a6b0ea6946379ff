#!/usr/bin/env bash
# Build the nested standard KVM host used by tests/nested.rs, from Debian packages:
#   $CACHE/nested/vmlinuz      bookworm-backports' 6.12 linux-image-amd64 (L1 kernel)
#   $CACHE/nested/initrd.cpio  busybox-static, l1.init, kvm_amd and the modules the
#                              tests need (order from modprobe --show-depends)
#   $CACHE/nested/root.ext4    bookworm minbase + iproute2 (xenkvm runs chrooted in it)
# and installs host tools when missing (debootstrap, e2fsprogs, cpio, and
# qemu-system-x86 from bookworm-backports, whose qemu-utils the CI image has).
# CACHE is resources/cache (override with XENKVM_CACHE). Package lists live in a
# private apt config under $CACHE/nested/apt; the host's sources are only touched to
# add bookworm-backports for qemu-system-x86. Idempotent; FORCE=1 rebuilds. Root only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/../cache}"
N="$CACHE/nested"
MIRROR="${XENKVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MODULES="kvm_amd virtio_blk ext4 tun bridge veth"
log() { printf '[nested] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
[ "${FORCE:-0}" = 1 ] && rm -rf "$N"
mkdir -p "$N"

# --- host tools ---
need=()
for t in debootstrap:debootstrap mkfs.ext4:e2fsprogs cpio:cpio; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if ! command -v qemu-system-x86_64 >/dev/null; then
    src=/etc/apt/sources.list.d/bookworm-backports.sources
    grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/ ||
        printf '%s\n' "Types: deb" "URIs: $MIRROR" "Suites: bookworm-backports" \
            "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$src"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports qemu-system-x86 >&2
fi
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# --- private apt config ---
A="$N/apt"
aptx() {
    apt-get -q -o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::Etc::PreferencesParts=/dev/null -o Dir::State::Lists="$A/lists" \
        -o Dir::Cache="$A/cache" -o APT::Sandbox::User=root "$@"
}
if [ ! -s "$A/sources.list" ]; then
    mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
    k=/usr/share/keyrings/debian-archive-keyring.gpg
    printf 'deb [signed-by=%s] %s %s main\n' "$k" "$MIRROR" bookworm "$k" "$MIRROR" bookworm-backports \
        >"$A/sources.list"
    aptx update -qq >&2
fi

# --- L1 kernel and modules (6.12 from bookworm-backports) ---
if [ ! -s "$N/vmlinuz" ]; then
    kpkg="$(aptx -t bookworm-backports install -s linux-image-amd64 2>/dev/null |
        sed -n 's/^Inst \(linux-image-[0-9][^ ]*\) .*/\1/p' | head -n1)"
    [ -n "$kpkg" ] || { log "cannot resolve linux-image-amd64 in bookworm-backports"; exit 1; }
    rm -rf "$N/debs" "$N/kernel"
    mkdir -p "$N/debs"
    (cd "$N/debs" && aptx -t bookworm-backports download "$kpkg" busybox-static >&2)
    for d in "$N"/debs/*.deb; do dpkg-deb -x "$d" "$N/kernel"; done
    cp "$N"/kernel/boot/vmlinuz-* "$N/vmlinuz.tmp" && mv "$N/vmlinuz.tmp" "$N/vmlinuz"
    log "L1 kernel: $kpkg"
fi

# --- bookworm root ---
if [ ! -s "$N/root.ext4" ]; then
    rm -rf "$N/root"
    debootstrap --variant=minbase --include=kmod,iproute2,iputils-ping bookworm "$N/root" "$MIRROR" >&2
    kv="$(ls "$N/kernel/lib/modules")"
    mkdir -p "$N/root/lib/modules"
    cp -a "$N/kernel/lib/modules/$kv" "$N/root/lib/modules/"
    chroot "$N/root" depmod "$kv"
    mkfs.ext4 -q -F -L xenkvm-l1 -d "$N/root" "$N/root.ext4.tmp" 2G
    mv "$N/root.ext4.tmp" "$N/root.ext4"
fi

# --- L1 initramfs ---
if [ ! -s "$N/initrd.cpio" ] || [ "$here/l1.init" -nt "$N/initrd.cpio" ] || [ "$0" -nt "$N/initrd.cpio" ]; then
    kv="$(ls "$N/kernel/lib/modules")"
    t="$N/initrd.d"
    rm -rf "$t"
    mkdir -p "$t"/{bin,proc,sys,dev,root,job,lib/modules}
    cp "$N/kernel/bin/busybox" "$t/bin/busybox"
    cp "$here/l1.init" "$t/init"
    : >"$t/lib/modules/order"
    for m in $MODULES; do
        chroot "$N/root" modprobe --show-depends "$m" -S "$kv" | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++' | while read -r p; do
        b="$(basename "$p")"
        b="${b%.xz}"
        if [ ! -e "$t/lib/modules/$b" ]; then
            if [[ "$p" == *.xz ]]; then xz -dc "$N/root$p" >"$t/lib/modules/$b"; else cp "$N/root$p" "$t/lib/modules/$b"; fi
            echo "$b" >>"$t/lib/modules/order"
        fi
    done
    (cd "$t" && find . | cpio -o -H newc --quiet) >"$N/initrd.cpio.tmp"
    mv "$N/initrd.cpio.tmp" "$N/initrd.cpio"
fi
log "ready in $N"

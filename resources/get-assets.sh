#!/usr/bin/env bash
# Obtain the guest assets used by xenkvm's demo and integration tests:
#   - a stock Debian 12 "cloud" kernel (a Xen PV-capable bzImage) and its modules,
#   - a static busybox,
#   - one gzip-compressed cpio (newc) initramfs per resources/initramfs/<name>.init.
#
# Everything lands in resources/cache/ (override with XENKVM_CACHE=DIR).
# Idempotent: packages already in the cache are not downloaded again (set
# XENKVM_REFRESH=1 to fetch them anew); an initramfs image is rebuilt when its init
# script, busybox or this script is newer than it.
#
# Needs: apt-get, apt-cache, dpkg-deb (a Debian/Ubuntu host with Debian's package
# lists for linux-image-cloud-amd64). Nothing else: the initramfs is packed with the
# downloaded busybox itself.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/cache}"
INITDIR="$here/initramfs"
REFRESH="${XENKVM_REFRESH:-0}"
KERNEL_META="${XENKVM_KERNEL_PACKAGE:-linux-image-cloud-amd64}"

log() { printf '[get-assets] %s\n' "$*" >&2; }
die() {
    printf '[get-assets] error: %s\n' "$*" >&2
    exit 1
}

no_apt() {
    # Plain printf only: this may run on a host without the usual tools.
    printf '%s\n' \
        "[get-assets] error: this script needs apt-get, apt-cache and dpkg-deb (a Debian-like host)." \
        "[get-assets] You can still run xenkvm with your own assets:" \
        "[get-assets]   xenkvm run --kernel PATH/TO/vmlinuz --initrd PATH/TO/initrd.cpio.gz" \
        "[get-assets] The kernel must be a Xen PV-capable x86-64 Linux (CONFIG_XEN_PV=y), as a" \
        "[get-assets] bzImage or an ELF vmlinux; the initrd is a cpio archive (optionally" \
        "[get-assets] gzip-compressed) with an executable /init." >&2
    exit 1
}

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/xenkvm-assets.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops privileges to _apt when run as root; let it write here.
chmod 0777 "$tmp"

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        apt_updated=1
        log "running apt-get update"
        if ! apt-get update -qq >&2; then
            log "apt-get update failed (not root?); continuing with the current package lists"
        fi
    fi
}

# Print the candidate version of a package, or nothing if apt does not know it.
candidate() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2; exit }'
}

# download PKG -> prints the path of the downloaded .deb
download() {
    local pkg="$1" tool
    for tool in apt-get apt-cache dpkg-deb; do
        command -v "$tool" >/dev/null 2>&1 || no_apt
    done
    if [ -z "$(candidate "$pkg")" ]; then
        apt_update_once
        [ -n "$(candidate "$pkg")" ] ||
            die "package $pkg is not known to apt (is Debian's main archive in sources.list?)"
    fi
    local dir="$tmp/dl-$pkg"
    mkdir -p "$dir"
    chmod 0777 "$dir"
    if ! (cd "$dir" && apt-get download -q "$pkg" >&2); then
        # Stale lists can point at files the mirror no longer has.
        apt_update_once
        (cd "$dir" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
    fi
    local deb
    deb="$(find "$dir" -maxdepth 1 -name '*.deb' | head -n 1)"
    [ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
    printf '%s\n' "$deb"
}

human() { du -sh "$1" | cut -f1; }

# ---------------------------------------------------------------- kernel
if [ "$REFRESH" = 1 ] || [ ! -s "$CACHE/vmlinuz" ] || [ ! -s "$CACHE/kernel-version" ]; then
    log "downloading $KERNEL_META"
    meta_deb="$(download "$KERNEL_META")"
    # The metapackage depends on the real image package, e.g. linux-image-6.1.0-56-cloud-amd64.
    kpkg="$(dpkg-deb -f "$meta_deb" Depends | tr ',' '\n' |
        sed -e 's/^[[:space:]]*//' -e 's/[[:space:]].*$//' |
        grep -E '^linux-image-[0-9]' | head -n 1 || true)"
    if [ -z "$kpkg" ]; then
        kpkg="$(apt-cache depends "$KERNEL_META" 2>/dev/null |
            awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
    fi
    [ -n "$kpkg" ] || die "cannot find the kernel package that $KERNEL_META depends on"
    log "downloading $kpkg"
    kdeb="$(download "$kpkg")"
    kx="$tmp/kernel"
    mkdir -p "$kx"
    dpkg-deb -x "$kdeb" "$kx"
    vmlinuz="$(find "$kx/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)"
    [ -n "$vmlinuz" ] || die "$kpkg contains no boot/vmlinuz-*"
    kver="${vmlinuz##*/vmlinuz-}"
    cp -f "$vmlinuz" "$CACHE/vmlinuz-$kver"
    cp -f "$vmlinuz" "$CACHE/vmlinuz.new"
    mv -f "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
    if [ -f "$kx/boot/config-$kver" ]; then
        cp -f "$kx/boot/config-$kver" "$CACHE/config-$kver"
    fi
    if [ -d "$kx/lib/modules/$kver" ]; then
        mkdir -p "$CACHE/modules"
        rm -rf "$CACHE/modules/$kver"
        cp -a "$kx/lib/modules/$kver" "$CACHE/modules/$kver"
    else
        log "warning: $kpkg has no lib/modules/$kver"
    fi
    printf '%s\n' "$kpkg $(dpkg-deb -f "$kdeb" Version)" >"$CACHE/kernel-package"
    printf '%s\n' "$kver" >"$CACHE/kernel-version"
else
    log "kernel already cached ($(cat "$CACHE/kernel-version")); XENKVM_REFRESH=1 to fetch again"
fi
kver="$(cat "$CACHE/kernel-version")"

# --------------------------------------------------------------- busybox
if [ "$REFRESH" = 1 ] || [ ! -x "$CACHE/busybox" ]; then
    log "downloading busybox-static"
    bdeb="$(download busybox-static)"
    bx="$tmp/busybox"
    mkdir -p "$bx"
    dpkg-deb -x "$bdeb" "$bx"
    [ -x "$bx/bin/busybox" ] || die "busybox-static contains no bin/busybox"
    cp -f "$bx/bin/busybox" "$CACHE/busybox.new"
    chmod 0755 "$CACHE/busybox.new"
    mv -f "$CACHE/busybox.new" "$CACHE/busybox"
    printf '%s\n' "busybox-static $(dpkg-deb -f "$bdeb" Version)" >"$CACHE/busybox-package"
else
    log "busybox already cached"
fi
BB="$CACHE/busybox"
"$BB" true 2>/dev/null || die "$BB does not run on this host"

# ------------------------------------------------- extra files per image
# A tree at $CACHE/extra-<name>/ is copied over the staging root of initramfs-<name>
# (the image is rebuilt when a file there is newer). "bench" has /bin/xkbench and
# /bin/xkdisk (tests/guests/bench/*.c built with the host's gcc as static binaries) and
# the kernel's xen-blkfront module for the block benchmark.
# initramfs-net gets /bin/xknet (bulk TCP sends and receives with big system calls).
for tool in xkbench xkdisk xknet; do
    src="$here/../tests/guests/bench/$tool.c"
    image=bench
    [ "$tool" != xknet ] || image=net
    bin="$CACHE/extra-$image/bin/$tool"
    [ -f "$src" ] || continue
    if ! command -v gcc >/dev/null 2>&1; then
        log "note: gcc not found; initramfs-$image is built without /bin/$tool"
    elif [ "$REFRESH" = 1 ] || [ ! "$bin" -nt "$src" ]; then
        log "building $tool (gcc -O2 -static)"
        mkdir -p "$CACHE/extra-$image/bin"
        if gcc -O2 -static -Wall -o "$bin.new" "$src" >&2; then
            mv -f "$bin.new" "$bin"
        else
            rm -f "$bin.new"
            log "note: building $tool failed (static glibc missing?); initramfs-$image goes without it"
        fi
    fi
done
blkfront="$CACHE/modules/$kver/kernel/drivers/block/xen-blkfront.ko"
if [ -f "$blkfront" ]; then
    mkdir -p "$CACHE/extra-bench/lib/modules"
    cmp -s "$blkfront" "$CACHE/extra-bench/lib/modules/xen-blkfront.ko" ||
        cp -f "$blkfront" "$CACHE/extra-bench/lib/modules/xen-blkfront.ko"
fi

# initramfs-net (tests/net.rs) loads the guest kernel's xen-netfront module.
netfront="$CACHE/modules/$kver/kernel/drivers/net/xen-netfront.ko"
if [ -f "$netfront" ]; then
    mkdir -p "$CACHE/extra-net/lib/modules"
    cmp -s "$netfront" "$CACHE/extra-net/lib/modules/xen-netfront.ko" ||
        cp -f "$netfront" "$CACHE/extra-net/lib/modules/xen-netfront.ko"
else
    log "note: $netfront not found; initramfs-net has no network driver"
fi

# initramfs-hotplug (tests/hotplug.rs) loads both front ends, with no device at boot.
for ko in "$blkfront" "$netfront"; do
    [ -f "$ko" ] || continue
    mkdir -p "$CACHE/extra-hotplug/lib/modules"
    cmp -s "$ko" "$CACHE/extra-hotplug/lib/modules/$(basename "$ko")" ||
        cp -f "$ko" "$CACHE/extra-hotplug/lib/modules/$(basename "$ko")"
done

# ------------------------------------------------------------- initramfs
# shellcheck source=busybox-tree.sh
. "$here/busybox-tree.sh"
build_initramfs() {
    local init="$1" name out root extra
    name="$(basename "$init" .init)"
    out="$CACHE/initramfs-$name.cpio.gz"
    root="$tmp/initramfs-$name"
    extra="$CACHE/extra-$name"
    if [ "$REFRESH" != 1 ] && [ "$out" -nt "$init" ] && [ "$out" -nt "$BB" ] &&
        [ "$out" -nt "${BASH_SOURCE[0]}" ] && [ "$out" -nt "$here/busybox-tree.sh" ] &&
        { [ ! -d "$extra" ] || [ -z "$("$BB" find "$extra" -newer "$out")" ]; }; then
        log "initramfs-$name is up to date"
        printf '%s\n' "$out"
        return
    fi
    rm -rf "$root"
    stage_busybox "$BB" "$root"
    cp "$init" "$root/init"
    chmod 0755 "$root/init"
    [ ! -d "$extra" ] || cp -R "$extra/." "$root/"
    # Pack with busybox itself: cpio newc, then gzip.
    (cd "$root" && "$BB" find . | LC_ALL=C "$BB" sort | "$BB" cpio -o -H newc 2>/dev/null) |
        "$BB" gzip -9 >"$out.new"
    mv -f "$out.new" "$out"
    printf '%s\n' "$out"
}

shopt -s nullglob
inits=("$INITDIR"/*.init)
[ "${#inits[@]}" -gt 0 ] || die "no init scripts in $INITDIR"
images=()
for init in "${inits[@]}"; do
    images+=("$(build_initramfs "$init")")
done

# ------------------------------------------------------------- disk images
# Test disks (disk-root.raw/.qcow2, disk-menulst.raw) and initramfs-blk; see mkdisk.sh.
# Its summary goes to stderr so this script's report stays as it was.
if ! XENKVM_CACHE="$CACHE" XENKVM_REFRESH="$REFRESH" bash "$here/mkdisk.sh" >&2; then
    log "warning: building the test disk images failed (resources/mkdisk.sh); disk tests will skip"
fi
# PV-GRUB2 (grub-x86_64-xen.bin from Debian's grub-xen-bin) and its disk; see mkpvgrub.sh.
if ! XENKVM_CACHE="$CACHE" XENKVM_REFRESH="$REFRESH" bash "$here/mkpvgrub.sh" >&2; then
    log "warning: building PV-GRUB2 failed (resources/mkpvgrub.sh); tests/pvgrub.rs will skip"
fi

# ------------------------------------------------------- full Debian image
# debian12.raw/.qcow2 (tests/debian_image.rs); see mkdebian.sh. It needs root and
# Debian's archive; without them the test says how to build the image.
# XENKVM_DEBIAN_LATER=1 leaves it out (scripts/test builds it beside the compiles).
if [ "${XENKVM_DEBIAN_LATER:-0}" = 1 ]; then
    log "the Debian image is left to the caller (XENKVM_DEBIAN_LATER=1)"
elif [ "$(id -u)" = 0 ]; then
    if ! XENKVM_CACHE="$CACHE" XENKVM_REFRESH="$REFRESH" bash "$here/mkdebian.sh" >&2; then
        log "warning: building the Debian image failed (resources/mkdebian.sh); tests/debian_image.rs will fail"
    fi
else
    log "note: not root: the Debian image (resources/mkdebian.sh) is not built"
fi

# ---------------------------------------------------------------- report
echo "xenkvm guest assets in $CACHE:"
echo "  kernel:    $CACHE/vmlinuz ($(human "$CACHE/vmlinuz")), version $kver"
[ -f "$CACHE/kernel-package" ] && echo "             package $(cat "$CACHE/kernel-package")"
echo "             also $CACHE/vmlinuz-$kver"
if [ -d "$CACHE/modules/$kver" ]; then
    echo "  modules:   $CACHE/modules/$kver ($(human "$CACHE/modules/$kver"))"
fi
echo "  busybox:   $CACHE/busybox ($(human "$CACHE/busybox"))" \
    "$(cat "$CACHE/busybox-package" 2>/dev/null || true)"
for img in "${images[@]}"; do
    echo "  initramfs: $img ($(human "$img"))"
done
echo "Try: xenkvm run --kernel $CACHE/vmlinuz --initrd $CACHE/initramfs-demo.cpio.gz"

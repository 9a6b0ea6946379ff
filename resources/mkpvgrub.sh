#!/usr/bin/env bash
# Build PV-GRUB2 and a disk for it, from Debian's packages (get-assets.sh calls this
# script after mkdisk.sh; run it alone to rebuild only these):
#   grub-x86_64-xen.bin   GRUB 2 as a Xen PV kernel, as Debian's grub-xen-host builds it:
#                         `grub-mkimage -O x86_64-xen` with the modules of grub-xen-bin,
#                         a memdisk holding a grub.cfg that searches the disks for
#                         /boot/grub/grub.cfg (the first disk is (xen/xvda...)) and
#                         `configfile`s it, and an embedded `normal (memdisk)/grub.cfg`.
#   grub-xen-package      the packages it was built from, with their versions
#   disk-pvgrub.raw       disk-root.raw (mkdisk.sh) with two changes:
#                         /boot/vmlinuz-<ver> is Debian's kernel as a gzip-compressed
#                         ELF vmlinux (GRUB's Xen loader reads ELF, or a bzImage with a
#                         gzip/xz/lzo payload; Debian 12's kernel is a bzImage with an
#                         LZ4 payload, which it cannot read: "error: not xen image";
#                         a kernel with a gzip or xz payload is copied as it is);
#                         grub.cfg's menu waits 1 s (not 5) and its default entry adds
#                         xktest=hello to the command line (the disk's init says
#                         XENKVM-HELLO and powers off).
# Usage: xenkvm run --kernel grub-x86_64-xen.bin --disk file:disk-pvgrub.raw,xvda,w
#
# Idempotent like mkdisk.sh: a file is rebuilt when an input is newer (XENKVM_REFRESH=1
# rebuilds all). Needs apt-get and dpkg-deb (the packages are downloaded and unpacked,
# nothing is installed), lz4, gzip, e2fsprogs (debugfs) and the assets of get-assets.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/cache}"
REFRESH="${XENKVM_REFRESH:-0}"

log() { printf '[mkpvgrub] %s\n' "$*" >&2; }
die() {
    printf '[mkpvgrub] error: %s\n' "$*" >&2
    exit 1
}

[ -d "$CACHE" ] || die "no asset cache at $CACHE (run resources/get-assets.sh)"
CACHE="$(cd "$CACHE" && pwd)"
for tool in apt-get dpkg-deb lz4 gzip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
DEBUGFS="$(command -v debugfs || command -v /sbin/debugfs || command -v /usr/sbin/debugfs || true)"
[ -n "$DEBUGFS" ] || die "debugfs not found (install e2fsprogs)"
[ -s "$CACHE/kernel-version" ] || die "$CACHE/kernel-version missing (run get-assets.sh)"
kver="$(cat "$CACHE/kernel-version")"
KERNEL="$CACHE/vmlinuz"
ROOTRAW="$CACHE/disk-root.raw"
[ -s "$KERNEL" ] || die "$KERNEL missing (run get-assets.sh)"
[ -s "$ROOTRAW" ] || die "$ROOTRAW missing (run mkdisk.sh)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/xenkvm-pvgrub.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# apt-get download drops privileges to _apt when run as root; let it write here.
chmod 0777 "$tmp"

newer_than_inputs() {
    local out="$1" f
    shift
    [ "$REFRESH" != 1 ] && [ -s "$out" ] || return 1
    for f in "${BASH_SOURCE[0]}" "$@"; do
        [ "$out" -nt "$f" ] || return 1
    done
}

# ------------------------------------------------------------ grub-x86_64-xen.bin
GRUBBIN="$CACHE/grub-x86_64-xen.bin"
if newer_than_inputs "$GRUBBIN"; then
    log "grub-x86_64-xen.bin is up to date"
else
    log "downloading grub-xen-bin and grub-common (for grub-mkimage)"
    if ! (cd "$tmp" && apt-get download -q grub-xen-bin grub-common >&2); then
        # Unknown packages or stale lists (as in get-assets.sh): update once, retry.
        log "apt-get download failed; running apt-get update and trying again"
        apt-get update -qq >&2 || log "apt-get update failed (not root?)"
        (cd "$tmp" && apt-get download -q grub-xen-bin grub-common >&2) ||
            die "apt-get download grub-xen-bin grub-common failed"
    fi
    mkdir -p "$tmp/x"
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
    mods="$tmp/x/usr/lib/grub/x86_64-xen"
    mkimage="$tmp/x/usr/bin/grub-mkimage"
    [ -f "$mods/kernel.img" ] || die "grub-xen-bin has no usr/lib/grub/x86_64-xen/kernel.img"
    [ -x "$mkimage" ] || die "grub-common has no usr/bin/grub-mkimage"
    # The memdisk's grub.cfg, in the spirit of Debian's grub-xen-host bootstrap config.
    mkdir -p "$tmp/memdisk"
    cat >"$tmp/memdisk/grub.cfg" <<'EOF'
insmod part_msdos
insmod part_gpt
insmod ext2
if search -s root -f /boot/grub/grub.cfg ; then
  echo "xenkvm-pvgrub: reading (${root})/boot/grub/grub.cfg"
  configfile /boot/grub/grub.cfg
elif search -s root -f /grub/grub.cfg ; then
  echo "xenkvm-pvgrub: reading (${root})/grub/grub.cfg"
  configfile /grub/grub.cfg
else
  echo "xenkvm-pvgrub: no /boot/grub/grub.cfg on any disk"
fi
EOF
    tar -C "$tmp/memdisk" -cf "$tmp/memdisk.tar" grub.cfg
    printf 'normal (memdisk)/grub.cfg\n' >"$tmp/embedded.cfg"
    "$mkimage" -O x86_64-xen -d "$mods" -c "$tmp/embedded.cfg" -m "$tmp/memdisk.tar" \
        -p '(memdisk)' -o "$GRUBBIN.new" \
        memdisk tar normal configfile echo test true minicmd loadenv halt reboot \
        search search_fs_file search_fs_uuid search_label part_msdos part_gpt ext2 \
        linux gzio xzio lzopio all_video lsxen >&2
    mv -f "$GRUBBIN.new" "$GRUBBIN"
    for deb in "$tmp"/*.deb; do
        printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
    done >"$CACHE/grub-xen-package"
fi

# ------------------------------------------------------------ disk-pvgrub.raw
PVDISK="$CACHE/disk-pvgrub.raw"
if newer_than_inputs "$PVDISK" "$ROOTRAW" "$KERNEL"; then
    log "disk-pvgrub.raw is up to date"
else
    log "building disk-pvgrub.raw (disk-root.raw with a gzip ELF kernel for GRUB)"
    # The bzImage's payload (boot protocol: setup_sects at 0x1f1, payload_offset and
    # payload_length at 0x248) is compressed data followed by the 4-byte size; an LZ4
    # one (a legacy frame: Debian's) is unpacked to the ELF vmlinux and gzipped.
    u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
    u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
    setup_sects="$(u8 "$KERNEL" $((0x1f1)))"
    poff="$(u32 "$KERNEL" $((0x248)))"
    plen="$(u32 "$KERNEL" $((0x24c)))"
    start=$(((setup_sects + 1) * 512 + poff))
    dd if="$KERNEL" of="$tmp/payload" iflag=skip_bytes,count_bytes bs=64K \
        skip="$start" count="$((plen - 4))" status=none
    magic="$(od -An -tx1 -N4 "$tmp/payload" | tr -d ' ')"
    case "$magic" in
    02214c18)
        lz4 -dc "$tmp/payload" >"$tmp/vmlinux" 2>/dev/null || true
        [ "$(head -c 4 "$tmp/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] ||
            die "$KERNEL: the decompressed payload is not an ELF vmlinux"
        gzip -9n -c "$tmp/vmlinux" >"$tmp/vmlinuz.gz"
        ;;
    1f8b* | fd377a58)
        # gzip or xz: GRUB reads this bzImage as it is.
        cp "$KERNEL" "$tmp/vmlinuz.gz"
        ;;
    *) die "$KERNEL: payload magic $magic is not LZ4, gzip or xz" ;;
    esac
    # Partition 1 starts at 1 MiB (mkdisk.sh); edit it with debugfs, then put it back.
    part="$tmp/part.ext4"
    dd if="$ROOTRAW" of="$part" bs=1M skip=1 status=none
    "$DEBUGFS" -R "cat /boot/grub/grub.cfg" "$part" >"$tmp/grub.cfg" 2>/dev/null
    grep -q "linux	/boot/vmlinuz-$kver root=/dev/xvda1 ro console=hvc0\$" "$tmp/grub.cfg" ||
        die "disk-root.raw's grub.cfg has no default entry as mkdisk.sh writes it"
    sed -i -e "s|^\(	linux	/boot/vmlinuz-$kver root=/dev/xvda1 ro console=hvc0\)\$|\1 xktest=hello|" \
        -e 's/set timeout=5/set timeout=1/' "$tmp/grub.cfg"
    "$DEBUGFS" -w -f - "$part" >/dev/null 2>"$tmp/debugfs.err" <<EOF
rm /boot/vmlinuz-$kver
write $tmp/vmlinuz.gz /boot/vmlinuz-$kver
rm /boot/grub/grub.cfg
write $tmp/grub.cfg /boot/grub/grub.cfg
EOF
    if grep -v '^debugfs ' "$tmp/debugfs.err" | grep -q .; then
        cat "$tmp/debugfs.err" >&2
        die "debugfs could not edit the file system"
    fi
    cp --sparse=always "$ROOTRAW" "$PVDISK.new"
    dd if="$part" of="$PVDISK.new" bs=1M seek=1 conv=notrunc,sparse status=none
    mv -f "$PVDISK.new" "$PVDISK"
fi

echo "PV-GRUB2 in $CACHE: $GRUBBIN ($(paste -sd, "$CACHE/grub-xen-package"))"
echo "  disk: $PVDISK (gzip ELF kernel $kver, grub.cfg with xktest=hello)"

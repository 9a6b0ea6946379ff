#!/usr/bin/env bash
# Build the xenkvm test disk images from the cached guest assets (run get-assets.sh
# first; it calls this script at its end):
#   initramfs-blk.cpio.gz  busybox + xen-blkfront/xen-netfront; mounts root= and
#                          switch_roots to its /sbin/init (resources/disk/initramfs-blk.init)
#   disk-root.raw          256 MiB, MBR, partition 1 (type 0x83, from 1 MiB) = ext4 root
#                          with /boot/grub/grub.cfg (GRUB 2, Debian style)
#   disk-menulst.raw       256 MiB unpartitioned ext4 with /boot/grub/menu.lst (GRUB legacy)
#   disk-root.qcow2        qemu-img convert -O qcow2 of disk-root.raw
# Each root file system holds busybox, /sbin/init (resources/disk/init), the disk tests
# /etc/tests/*.sh (run with xktest=NAME on the kernel command line), the two PV front-end
# modules, /boot/vmlinuz-<ver> and /boot/initrd.img-<ver> (= initramfs-blk).
#
# Idempotent: an image is rebuilt only when one of its inputs is newer (XENKVM_REFRESH=1
# rebuilds all). Needs only coreutils, e2fsprogs (mkfs.ext4 -d), qemu-img (for the qcow2
# image) and the cached busybox; no network. Run as root so the files in the images are
# owned by root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/cache}"
DISKDIR="$here/disk"
REFRESH="${XENKVM_REFRESH:-0}"
DISK_MIB=256

log() { printf '[mkdisk] %s\n' "$*" >&2; }
die() {
    printf '[mkdisk] error: %s\n' "$*" >&2
    exit 1
}

[ -d "$CACHE" ] || die "no asset cache at $CACHE (run resources/get-assets.sh)"
CACHE="$(cd "$CACHE" && pwd)"
BB="$CACHE/busybox"
KERNEL="$CACHE/vmlinuz"
[ -x "$BB" ] || die "$BB missing (run resources/get-assets.sh)"
[ -s "$KERNEL" ] || die "$KERNEL missing (run resources/get-assets.sh)"
[ -s "$CACHE/kernel-version" ] || die "$CACHE/kernel-version missing"
kver="$(cat "$CACHE/kernel-version")"
MODDIR="$CACHE/modules/$kver/kernel"
MODS=(drivers/block/xen-blkfront.ko drivers/net/xen-netfront.ko)
for m in "${MODS[@]}"; do
    [ -f "$MODDIR/$m" ] || die "$MODDIR/$m missing (modules of $kver not cached?)"
done
MKFS="$(command -v mkfs.ext4 || command -v /sbin/mkfs.ext4 || command -v /usr/sbin/mkfs.ext4 || true)"
[ -n "$MKFS" ] || die "mkfs.ext4 not found (install e2fsprogs)"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/xenkvm-mkdisk.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Everything an image is made of; a change to any of these rebuilds it.
# shellcheck source=busybox-tree.sh
. "$here/busybox-tree.sh"
inputs=("$BB" "$KERNEL" "$CACHE/kernel-version" "${BASH_SOURCE[0]}" "$here/busybox-tree.sh")
for m in "${MODS[@]}"; do inputs+=("$MODDIR/$m"); done
while IFS= read -r f; do inputs+=("$f"); done < <(find "$DISKDIR" -type f | LC_ALL=C sort)

# up_to_date OUT: OUT exists and is newer than every input (and any extra arguments).
up_to_date() {
    local out="$1" f
    shift
    [ "$REFRESH" != 1 ] && [ -s "$out" ] || return 1
    for f in "${inputs[@]}" "$@"; do
        [ "$out" -nt "$f" ] || return 1
    done
}

# Fixed file-system UUIDs, so the configs can name them like update-grub does.
ROOT_UUID=8a1f0c3e-5b7d-4e2a-9c61-3d0b7e5a2f14
MENULST_UUID=2c9e4b71-0d3a-4f68-8b25-6e1a9d7c3f50

# ------------------------------------------------------------ busybox tree
# stage_tree DIR: the busybox tree (resources/busybox-tree.sh) plus the modules.
stage_tree() {
    local root="$1" m
    stage_busybox "$BB" "$root"
    for m in "${MODS[@]}"; do
        mkdir -p "$root/lib/modules/$kver/kernel/$(dirname "$m")"
        cp "$MODDIR/$m" "$root/lib/modules/$kver/kernel/$m"
    done
}

# ------------------------------------------------------------ initramfs-blk
INITRD="$CACHE/initramfs-blk.cpio.gz"
if up_to_date "$INITRD"; then
    log "initramfs-blk is up to date"
else
    log "building initramfs-blk"
    root="$tmp/initramfs-blk"
    stage_tree "$root"
    cp "$DISKDIR/initramfs-blk.init" "$root/init"
    chmod 0755 "$root/init"
    mkdir -p "$root/newroot"
    (cd "$root" && "$BB" find . | LC_ALL=C "$BB" sort | "$BB" cpio -o -H newc 2>/dev/null) |
        "$BB" gzip -9 >"$INITRD.new"
    mv -f "$INITRD.new" "$INITRD"
fi

# ------------------------------------------------------------ root file system tree
# stage_root DIR: the root file system shared by both disks (without a boot config).
stage_root() {
    local root="$1"
    stage_tree "$root"
    rm -f "$root/sbin/init"
    cp "$DISKDIR/init" "$root/sbin/init"
    chmod 0755 "$root/sbin/init"
    cp "$DISKDIR/xenkvm-test" "$root/etc/xenkvm-test"
    chmod 0755 "$root/etc/xenkvm-test"
    mkdir -p "$root/etc/tests" "$root/boot/grub"
    cp "$DISKDIR"/tests/*.sh "$root/etc/tests/"
    chmod 0755 "$root"/etc/tests/*.sh
    printf 'xenkvm-disk\n' >"$root/etc/hostname"
    cp "$KERNEL" "$root/boot/vmlinuz-$kver"
    cp "$INITRD" "$root/boot/initrd.img-$kver"
}

# mkfs_into IMAGE OFFSET_MIB SIZE_MIB UUID LABEL TREE: an ext4 file system made from
# TREE, written into IMAGE at OFFSET_MIB (IMAGE is created sparse by the caller).
mkfs_into() {
    local img="$1" off="$2" size="$3" uuid="$4" label="$5" tree="$6" fs="$tmp/fs.ext4"
    rm -f "$fs"
    truncate -s "${size}M" "$fs"
    "$MKFS" -q -F -t ext4 -b 4096 -L "$label" -U "$uuid" -E root_owner=0:0 -d "$tree" "$fs" "${size}M" >&2
    dd if="$fs" of="$img" bs=1M seek="$off" conv=notrunc,sparse status=none
    rm -f "$fs"
}

# A 4-byte little-endian integer as printf escapes.
le32() {
    printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
        $((($1 >> 16) & 255)) $((($1 >> 24) & 255))
}

# --------------------------------------------------------------- disk-root.raw
ROOTRAW="$CACHE/disk-root.raw"
if up_to_date "$ROOTRAW" "$INITRD"; then
    log "disk-root.raw is up to date"
else
    log "building disk-root.raw ($DISK_MIB MiB, MBR, ext4 partition 1 at 1 MiB)"
    tree="$tmp/root"
    rm -rf "$tree"
    stage_root "$tree"
    sed -e "s/@KVER@/$kver/g" -e "s/@UUID@/$ROOT_UUID/g" >"$tree/boot/grub/grub.cfg" <<'EOF'
#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
# (here: written by xenkvm's resources/mkdisk.sh in the same style)
#

### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
    insmod vbe
    insmod vga
  fi
}

terminal_input console
terminal_output console
if [ "${recordfail}" = 1 ] ; then
  set timeout=30
else
  if [ x$feature_timeout_style = xy ] ; then
    set timeout_style=menu
    set timeout=5
  # Fallback normal timeout code in case the timeout_style feature is
  # unavailable.
  else
    set timeout=5
  fi
fi
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-@UUID@' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	if [ x$feature_platform_search_hint = xy ]; then
	  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 --hint-baremetal=ahci0,msdos1  @UUID@
	else
	  search --no-floppy --fs-uuid --set=root @UUID@
	fi
	echo	'Loading Linux @KVER@ ...'
	linux	/boot/vmlinuz-@KVER@ root=/dev/xvda1 ro console=hvc0
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-@KVER@
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-@UUID@' {
	menuentry 'Debian GNU/Linux, with Linux @KVER@ (recovery mode)' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-@KVER@-recovery-@UUID@' {
		load_video
		insmod gzio
		if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
		insmod part_msdos
		insmod ext2
		set root='hd0,msdos1'
		search --no-floppy --fs-uuid --set=root @UUID@
		echo	'Loading Linux @KVER@ ...'
		linux	/boot/vmlinuz-@KVER@ root=/dev/xvda1 ro single console=hvc0
		echo	'Loading initial ramdisk ...'
		initrd	/boot/initrd.img-@KVER@
	}
}

### END /etc/grub.d/10_linux ###

### BEGIN /etc/grub.d/40_custom ###
# This file provides an easy way to add custom menu entries.  Simply type the
# menu entries you want to add after this comment.  Be careful not to change
# the 'exec tail' line above.
### END /etc/grub.d/40_custom ###
EOF
    rm -f "$ROOTRAW.new"
    truncate -s "${DISK_MIB}M" "$ROOTRAW.new"
    mkfs_into "$ROOTRAW.new" 1 $((DISK_MIB - 1)) "$ROOT_UUID" xenkvm-root "$tree"
    # The MBR: disk signature, one active Linux (0x83) partition from LBA 2048 to the
    # end, boot signature. CHS fields hold the usual "beyond 8 GiB" placeholders.
    sectors=$(((DISK_MIB - 1) * 2048))
    {
        printf 'XKVM\0\0'
        printf '\x80\xfe\xff\xff\x83\xfe\xff\xff'
        printf "$(le32 2048)$(le32 "$sectors")"
        head -c 48 /dev/zero
        printf '\x55\xaa'
    } | dd of="$ROOTRAW.new" bs=1 seek=440 conv=notrunc status=none
    mv -f "$ROOTRAW.new" "$ROOTRAW"
fi

# ------------------------------------------------------------ disk-menulst.raw
MENURAW="$CACHE/disk-menulst.raw"
if up_to_date "$MENURAW" "$INITRD"; then
    log "disk-menulst.raw is up to date"
else
    log "building disk-menulst.raw ($DISK_MIB MiB, unpartitioned ext4, GRUB legacy menu.lst)"
    tree="$tmp/menulst"
    rm -rf "$tree"
    stage_root "$tree"
    sed -e "s/@KVER@/$kver/g" >"$tree/boot/grub/menu.lst" <<'EOF'
# menu.lst - See: grub(8), info grub, update-grub(8)
# (written by xenkvm's resources/mkdisk.sh in the style of an old Debian/EC2 PV image:
#  the disk is one file system, hence "root (hd0)" and root=/dev/xvda)

## default num
default		0

## timeout sec
timeout		5

hiddenmenu

### BEGIN AUTOMAGIC KERNELS LIST
title		Debian GNU/Linux, kernel @KVER@
root		(hd0)
kernel		/boot/vmlinuz-@KVER@ root=/dev/xvda ro console=hvc0
initrd		/boot/initrd.img-@KVER@

title		Debian GNU/Linux, kernel @KVER@ (single-user mode)
root		(hd0)
kernel		/boot/vmlinuz-@KVER@ root=/dev/xvda ro single console=hvc0
initrd		/boot/initrd.img-@KVER@
### END DEBIAN AUTOMAGIC KERNELS LIST
EOF
    rm -f "$MENURAW.new"
    truncate -s "${DISK_MIB}M" "$MENURAW.new"
    mkfs_into "$MENURAW.new" 0 "$DISK_MIB" "$MENULST_UUID" xenkvm-menulst "$tree"
    mv -f "$MENURAW.new" "$MENURAW"
fi

# ------------------------------------------------------------- disk-root.qcow2
ROOTQ="$CACHE/disk-root.qcow2"
if ! command -v qemu-img >/dev/null 2>&1; then
    log "note: qemu-img not found; disk-root.qcow2 not built"
elif [ "$REFRESH" != 1 ] && [ "$ROOTQ" -nt "$ROOTRAW" ]; then
    log "disk-root.qcow2 is up to date"
else
    log "building disk-root.qcow2"
    rm -f "$ROOTQ.new"
    qemu-img convert -f raw -O qcow2 "$ROOTRAW" "$ROOTQ.new"
    mv -f "$ROOTQ.new" "$ROOTQ"
fi

# ---------------------------------------------------------------- report
# Apparent size and space used on the host (the raw images are sparse).
sizes() { printf '%s, %s used' "$(du -h --apparent-size "$1" | cut -f1)" "$(du -h "$1" | cut -f1)"; }
echo "xenkvm test disks in $CACHE (kernel $kver):"
echo "  initramfs: $INITRD ($(sizes "$INITRD"))"
echo "  disk:      $ROOTRAW ($(sizes "$ROOTRAW")): MBR, ext4 partition 1, grub.cfg"
echo "  disk:      $MENURAW ($(sizes "$MENURAW")): unpartitioned ext4, menu.lst"
[ -f "$ROOTQ" ] && echo "  disk:      $ROOTQ ($(sizes "$ROOTQ")): qcow2 of disk-root.raw"
echo "  tests:     xktest=NAME for NAME in: $(cd "$DISKDIR/tests" && ls *.sh | sed 's/\.sh$//' | tr '\n' ' ')"

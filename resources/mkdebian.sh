#!/usr/bin/env bash
# Build a full Debian 12 (bookworm) guest disk, as a new user would make one for Xen:
#   debian12.raw    2 GiB sparse, MBR, partition 1 (type 0x83, from 1 MiB) = ext4 root
#   debian12.qcow2  qemu-img convert -O qcow2 of debian12.raw
# The root is debootstrap's minbase plus systemd-sysv, udev, ifupdown, openssh-server,
# iproute2, iputils-ping and linux-image-cloud-amd64 (with its initramfs-tools initrd),
# and /boot/grub/grub.cfg written by the real grub-mkconfig (package grub2-common, run
# in the chroot as update-grub runs it). grub-mkconfig asks grub-probe about the device
# holding /; in a chroot of a plain directory there is none, so a stand-in grub-probe
# (removed afterwards) answers what it would answer for /dev/xvda1, ext4, MBR partition
# 1 of hd0. Everything else in grub.cfg is the stock /etc/grub.d output.
#
# TEST-ONLY credentials: root's password is "xenkvm" (tests/debian_image.rs logs in
# with it on hvc0). Do not use this image for anything reachable from a network.
#
# Network: /etc/network/interfaces brings the first vif up (allow-hotplug) with the
# static address 10.98.0.2/24, gateway 10.98.0.1 (the host side the test sets up).
# Debian 12's udev names a Xen netfront nic by its vif number: enX0 (not eth0).
#
# Cached: the images are rebuilt only when this script changes (its sha256 is kept in
# debian12.stamp) or with XENKVM_REFRESH=1. The downloaded .debs stay in
# $XENKVM_CACHE/debian12-debs, so a rebuild downloads nothing again.
# Needs: root, debootstrap, e2fsprogs (mkfs.ext4 -d), qemu-img, and Debian's archive.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/cache}"
REFRESH="${XENKVM_REFRESH:-0}"
MIRROR="${XENKVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DISK_MIB=2048
ROOT_UUID=5d0c2a47-91e3-4b8f-a6d2-7e4f13c8b905
ROOT_PASSWORD=xenkvm

log() { printf '[mkdebian] %s\n' "$*" >&2; }
die() {
    printf '[mkdebian] error: %s\n' "$*" >&2
    exit 1
}

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
RAW="$CACHE/debian12.raw"
QCOW="$CACHE/debian12.qcow2"
STAMP="$CACHE/debian12.stamp"
DEBS="$CACHE/debian12-debs"
want="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"

if [ "$REFRESH" != 1 ] && [ -s "$RAW" ] && [ -s "$QCOW" ] && [ -f "$STAMP" ] &&
    [ "$(cat "$STAMP")" = "$want" ]; then
    log "debian12.raw and debian12.qcow2 are up to date"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get install -y -q debootstrap >&2 || die "debootstrap is missing and could not be installed"
fi
MKFS="$(command -v mkfs.ext4 || echo /usr/sbin/mkfs.ext4)"
[ -x "$MKFS" ] || die "mkfs.ext4 not found (install e2fsprogs)"
command -v qemu-img >/dev/null 2>&1 || die "qemu-img not found (install qemu-utils)"

start=$(date +%s)
tmp="$(mktemp -d "${TMPDIR:-/var/tmp}/xenkvm-mkdebian.XXXXXX")"
root="$tmp/root"
cleanup() {
    for m in dev/pts dev proc sys; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$DEBS" "$root"

# ------------------------------------------------------------------ debootstrap
PKGS=systemd-sysv,udev,ifupdown,openssh-server,iproute2,iputils-ping,kmod,initramfs-tools
PKGS=$PKGS,linux-image-cloud-amd64,grub2-common,zstd
log "debootstrap bookworm (minbase + $PKGS); .debs cached in $DEBS"
debootstrap --variant=minbase --include="$PKGS" --cache-dir="$DEBS" \
    bookworm "$root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 || {
    tail -n 30 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (no network to $MIRROR?); the log's end is above"
}

kver="$(cd "$root/boot" && ls vmlinuz-* | head -n 1 | sed 's/^vmlinuz-//')"
[ -n "$kver" ] || die "no kernel in the new root's /boot"
[ -s "$root/boot/initrd.img-$kver" ] || die "no initrd.img-$kver in the new root's /boot"

# ------------------------------------------------------------------ configuration
printf 'debian12\n' >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian12\n' >"$root/etc/hosts"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$root/etc/fstab"
cat >"$root/etc/network/interfaces" <<'EOF'
# Written by xenkvm's resources/mkdebian.sh (test image).
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# The first Xen vif (systemd's predictable name for xen-netfront vif 0).
allow-hotplug enX0
iface enX0 inet static
	address 10.98.0.2/24
	gateway 10.98.0.1
EOF
# A machine id is made at first boot (as for a cloud image).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo "root:$ROOT_PASSWORD" | chroot "$root" chpasswd
# The image is the same for everyone: host keys are made at first boot.
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/xenkvm-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
EOF

# ------------------------------------------------------------------ grub.cfg
# The real grub-mkconfig (update-grub), with the stand-in grub-probe described above.
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
probe="$root/usr/sbin/grub-probe"
mv "$probe" "$probe.real"
cat >"$probe" <<EOF
#!/bin/sh
# xenkvm mkdebian.sh stand-in: the answers for / on /dev/xvda1 (MBR partition 1, ext4).
target=device
for a in "\$@"; do
    case "\$a" in --target=*) target="\${a#--target=}" ;; esac
done
case "\$target" in
device) echo /dev/xvda1 ;;
fs) echo ext2 ;;
fs_uuid) echo $ROOT_UUID ;;
fs_label) echo ;;
partmap) echo msdos ;;
abstraction) ;;
drive) echo '(hd0,msdos1)' ;;
compatibility_hint) echo hd0,msdos1 ;;
bios_hints) echo '--hint-bios=hd0,msdos1' ;;
baremetal_hints) echo '--hint-baremetal=ahci0,msdos1' ;;
efi_hints) echo '--hint-efi=hd0,msdos1' ;;
arc_hints | ieee1275_hints) ;;
*) exit 1 ;;
esac
EOF
chmod 0755 "$probe"
# /etc/default/grub as grub-pc's postinst installs it (grub2-common does not ship
# it), with the serial console a Xen PV guest uses.
cat >"$root/etc/default/grub" <<'EOF2'
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=hvc0"
EOF2
mkdir -p "$root/boot/grub"
chroot "$root" update-grub >"$tmp/update-grub.log" 2>&1 || {
    cat "$tmp/update-grub.log" >&2
    die "update-grub failed in the chroot"
}
mv -f "$probe.real" "$probe"
umount "$root/sys" "$root/proc" "$root/dev"
grep -q "vmlinuz-$kver" "$root/boot/grub/grub.cfg" || die "grub.cfg has no entry for $kver"

# Slim: apt's lists and the .debs (they are in $DEBS) are not needed in the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages

# ------------------------------------------------------------------ images
log "making $RAW ($DISK_MIB MiB, MBR, ext4 partition 1 at 1 MiB)"
fs="$tmp/fs.ext4"
truncate -s "$((DISK_MIB - 1))M" "$fs"
"$MKFS" -q -F -t ext4 -b 4096 -L debian12 -U "$ROOT_UUID" -E root_owner=0:0 -d "$root" "$fs" >&2
rm -f "$RAW.new"
truncate -s "${DISK_MIB}M" "$RAW.new"
printf 'label: dos\nlabel-id: 0x584b564d\nstart=2048, type=83, bootable\n' |
    sfdisk -q "$RAW.new" >&2 2>/dev/null || {
    # No sfdisk: the same MBR by hand (one active 0x83 partition from LBA 2048).
    le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) \
        $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
    {
        printf 'MVKX\0\0\x80\xfe\xff\xff\x83\xfe\xff\xff'
        printf "$(le32 2048)$(le32 $(((DISK_MIB - 1) * 2048)))"
        head -c 48 /dev/zero
        printf '\x55\xaa'
    } | dd of="$RAW.new" bs=1 seek=440 conv=notrunc status=none
}
dd if="$fs" of="$RAW.new" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$fs"
log "making $QCOW"
rm -f "$QCOW.new"
qemu-img convert -f raw -O qcow2 "$RAW.new" "$QCOW.new"
mv -f "$RAW.new" "$RAW"
mv -f "$QCOW.new" "$QCOW"
printf '%s\n' "$want" >"$STAMP"
printf '%s\n' "$kver" >"$CACHE/debian12-kernel-version"
log "done in $(($(date +%s) - start)) s: $RAW ($(du -h "$RAW" | cut -f1) used), $QCOW ($(du -h "$QCOW" | cut -f1)), kernel $kver"

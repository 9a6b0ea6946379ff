#!/usr/bin/env bash
# Boot the Xen 4.17 machine built by prepare.sh (QEMU TCG, -cpu max, 1 CPU; Xen, then
# dom0 = the nested host's 6.12 kernel), run one job in dom0 and exit with its status.
#   run.sh JOB.sh [FILE...]
# FILEs appear in dom0 under /job (and /root/job inside the root, where `chroot /root
# xl ...` runs Xen's tools). XENKVM_XEN_DISKS="A.raw ...": raw images attached
# read-write as /dev/vdb, ... Exit: the job's status, 124 on timeout
# (XENKVM_XEN_TIMEOUT seconds, default 1200), 3 if dom0 gave no result. The serial log
# (Xen's and dom0's consoles) is kept in $CACHE/xen/logs/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/../cache}"
N="$CACHE/nested"
X="$CACHE/xen"
TIMEOUT="${XENKVM_XEN_TIMEOUT:-1200}"

[ $# -ge 1 ] || { echo "usage: $0 JOB.sh [FILE...]" >&2; exit 2; }
for f in "$X/xen" "$X/initrd.cpio" "$X/root.ext4" "$N/vmlinuz"; do
    [ -e "$f" ] || { echo "[xen] $f missing: run resources/xen/prepare.sh" >&2; exit 2; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/job" "$X/logs"
cp "$1" "$work/job/job.sh"
shift
for f in "$@"; do cp -L "$f" "$work/job/"; done
(cd "$work" && find job | cpio -o -H newc --quiet) >"$work/job.cpio"
cat "$X/initrd.cpio" "$work/job.cpio" >"$work/initrd"
log="$X/logs/xen-$(date +%Y%m%dT%H%M%S)-$$.log"
disks=()
for d in ${XENKVM_XEN_DISKS:-}; do
    [ -f "$d" ] || { echo "[xen] disk $d missing" >&2; exit 2; }
    disks+=(-drive "file=$d,if=virtio,format=raw,cache=unsafe")
done
# QEMU's multiboot loader: modules separated by ',' with their command lines.
dom0="$N/vmlinuz console=hvc0 earlyprintk=xen panic=-1 quiet"
rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 3G \
    -machine pc -nodefaults -no-user-config -display none -vga none -monitor none \
    -serial stdio -no-reboot -kernel "$X/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 noreboot" \
    -initrd "$dom0,$work/initrd" \
    -drive "file=$X/root.ext4,if=virtio,format=raw,snapshot=on" "${disks[@]}" </dev/null |
    tee "$log" || rc=$?
[ "$rc" = 124 ] && { echo "[xen] timed out after ${TIMEOUT}s; log $log" >&2; exit 124; }
st="$(tr -d '\r' <"$log" | sed -n 's/^XENKVM-L1: EXIT=\([0-9]*\).*/\1/p' | tail -n1)"
[ -n "$st" ] || { echo "[xen] no job result; log $log" >&2; exit 3; }
exit "$st"

#!/usr/bin/env bash
# Boot the nested standard KVM host (L1: QEMU TCG, -cpu max = AMD-V + NPT,
# -smp 1) built by prepare.sh, run one job in it and exit with the job's status.
#   run-l1.sh JOB.sh [FILE...]      run a job script
#   run-l1.sh -c 'COMMANDS' [FILE...]
# FILEs appear in L1 under /job (and /root/job inside the bookworm root, so
# "chroot /root /job/xenkvm ..." works). Exit: job status, 124 on timeout
# (XENKVM_NESTED_TIMEOUT seconds, default 900), 3 if L1 gave no result.
# XENKVM_NESTED_DISKS="A.raw B.raw": raw images attached read-write as
# /dev/vdb, /dev/vdc, ... (what L1 writes lands in the files).
# The console log is kept in $CACHE/nested/logs/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/../cache}"
N="$CACHE/nested"
TIMEOUT="${XENKVM_NESTED_TIMEOUT:-900}"

[ $# -ge 1 ] || { echo "usage: $0 JOB.sh|-c COMMANDS [FILE...]" >&2; exit 2; }
for f in vmlinuz initrd.cpio root.ext4; do
    [ -e "$N/$f" ] || { echo "[run-l1] $N/$f missing: run resources/nested/prepare.sh" >&2; exit 2; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/job" "$N/logs"
if [ "$1" = -c ]; then
    printf '%s\n' "$2" >"$work/job/job.sh"
    shift 2
else
    cp "$1" "$work/job/job.sh"
    shift
fi
for f in "$@"; do cp -L "$f" "$work/job/"; done
(cd "$work" && find job | cpio -o -H newc --quiet) >"$work/job.cpio"
cat "$N/initrd.cpio" "$work/job.cpio" >"$work/initrd"
log="$N/logs/l1-$(date +%Y%m%dT%H%M%S)-$$.log"
disks=()
for d in ${XENKVM_NESTED_DISKS:-}; do
    [ -f "$d" ] || { echo "[run-l1] disk $d missing" >&2; exit 2; }
    disks+=(-drive "file=$d,if=virtio,format=raw,cache=unsafe")
done
rc=0
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 4G \
    -machine pc -nodefaults -no-user-config -display none -vga none -monitor none \
    -serial stdio -no-reboot -kernel "$N/vmlinuz" -initrd "$work/initrd" \
    -append "console=ttyS0 panic=-1 quiet" \
    -drive "file=$N/root.ext4,if=virtio,format=raw,snapshot=on" "${disks[@]}" </dev/null |
    tee "$log" || rc=$?
[ "$rc" = 124 ] && { echo "[run-l1] timed out after ${TIMEOUT}s; log $log" >&2; exit 124; }
st="$(tr -d '\r' <"$log" | sed -n 's/^XENKVM-L1: EXIT=\([0-9]*\).*/\1/p' | tail -n1)"
[ -n "$st" ] || { echo "[run-l1] no job result; log $log" >&2; exit 3; }
exit "$st"

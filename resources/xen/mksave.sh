#!/usr/bin/env bash
# Produce $CACHE/xen/counter.xl-save: a stream written by real Xen 4.17's `xl save` (on the
# emulated Xen machine of prepare.sh/run.sh) of a 128 MiB, 1-vCPU PV domU running the
# Debian cloud kernel (get-assets.sh's vmlinuz) and a busybox init that counts once a
# second (counter.init); the count reached before the save is in counter.xl-save.count.
# About a minute after prepare.sh. Idempotent; FORCE=1 redoes it. Root only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${XENKVM_CACHE:-$here/../cache}"
X="$CACHE/xen"
out="$X/counter.xl-save"
log() { printf '[xen] %s\n' "$*" >&2; }

[ "${FORCE:-0}" = 1 ] && rm -f "$out"
if [ -s "$out" ] && [ "$out" -nt "$here/counter.init" ] && [ "$out" -nt "$CACHE/vmlinuz" ]; then
    exit 0
fi
[ -s "$CACHE/vmlinuz" ] || { log "$CACHE/vmlinuz missing: run resources/get-assets.sh"; exit 1; }
FORCE=0 bash "$here/prepare.sh"
disk="$(mktemp "$X/save-disk.XXXXXX")"
con="$(mktemp "$X/save-log.XXXXXX")"
trap 'rm -f "$disk" "$con"' EXIT
truncate -s 256M "$disk"
XENKVM_XEN_DISKS="$disk" bash "$here/run.sh" "$here/save-job.sh" \
    "$CACHE/vmlinuz" "$X/guest.cpio.gz" "$here/domu.cfg" >"$con" 2>&1 ||
    { tail -n 40 "$con" >&2; log "xl save on Xen failed"; exit 1; }
n="$(tr -d '\r' <"$con" | sed -n 's/.*XEN-SAVE-BYTES=\([0-9]*\).*/\1/p' | tail -n1)"
[ -n "$n" ] || { log "no XEN-SAVE-BYTES in the console"; exit 1; }
count="$(tr -d '\r' <"$con" | sed -n 's/^XEN-COUNT \([0-9]*\)$/\1/p' | tail -n1)"
head -c "$n" "$disk" >"$out.tmp"
printf '%s\n' "${count:-0}" >"$out.count"
mv "$out.tmp" "$out"
log "$out: $n bytes, saved after XEN-COUNT ${count:-?}"

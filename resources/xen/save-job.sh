# Job for run.sh (runs in dom0's busybox, the Xen tools chrooted in /root): start
# xenstored and xenconsoled, create the counter domU (/job/domu.cfg), let it count,
# `xl save` it, and write the stream to /dev/vdb; prints XEN-SAVE-BYTES=<n> and the
# guest's console. The domU's kernel and initramfs are /job/vmlinuz and
# /job/guest.cpio.gz.
B=/usr/lib/xen-4.17/bin
x() { chroot /root "$@"; }
xl() { chroot /root $B/xl "$@"; }
xl info | grep -E '^(xen_version|xen_caps|total_memory)' || exit 10
x $B/xenstored --pid-file=/run/xenstored.pid || exit 11
x $B/xen-init-dom0 || exit 11
mkdir -p /root/tmp/xc
x $B/xenconsoled --log=guest --log-dir=/tmp/xc || exit 12
xl create /job/domu.cfg || exit 13
i=0
until grep -q "XEN-COUNT ${XEN_COUNT_BEFORE_SAVE:-5}" /root/tmp/xc/guest-counter.log 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -le 600 ] || { cat /root/tmp/xc/*.log; echo "XEN-JOB: the guest never counted"; exit 14; }
    sleep 1
done
xl list
xl save counter /tmp/counter.save || exit 15
n="$(stat -c %s /root/tmp/counter.save)"
echo "XEN-SAVE-BYTES=$n"
dd if=/root/tmp/counter.save of=/dev/vdb bs=1M conv=fsync 2>/dev/null || exit 16
echo "XEN-GUEST-CONSOLE:"
cat /root/tmp/xc/guest-counter.log
exit 0

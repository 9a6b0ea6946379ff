#!/bin/sh
# The disk and network check for slow hosts (tests/nested.rs, one boot):
# writes 1 MiB of known content to /data1.bin and syncs (the host reads it
# back from the image afterwards; the content is
#   yes XENKVMDATA0123456789 | head -c 1048576 );
# with xknet=ADDR/PREFIX,HOST,PORT on the command line it then loads
# netfront, pings HOST and sends /data1.bin to HOST:PORT.
yes XENKVMDATA0123456789 | head -c 1048576 >/data1.bin
sync
sum=$(md5sum </data1.bin)
echo "XENKVM-WRITE1-DONE ${sum%% *}"
cfg=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    xknet=*) cfg="${arg#xknet=}" ;;
    esac
done
[ -n "$cfg" ] || exit 0
addr="${cfg%%,*}"
rest="${cfg#*,}"
host="${rest%%,*}"
port="${rest#*,}"
# initramfs-blk loads netfront with blkfront; a direct boot may not have.
[ -d /sys/module/xen_netfront ] ||
    insmod "$(find /lib/modules -name xen-netfront.ko | head -n 1)" || echo "XKNET-FAIL insmod"
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
[ -e /sys/class/net/eth0 ] || { echo "XKNET-FAIL no eth0"; exit 1; }
ip link set lo up
ip link set eth0 up
ip addr add "$addr" dev eth0
echo "XKNET-UP $addr"
if ping -c 3 -w 60 "$host" >/tmp/ping 2>&1; then
    echo "XKNET-PING-OK"
else
    echo "XKNET-PING-FAIL"
    cat /tmp/ping
fi
echo "XKNET-MD5 ${sum%% *} $(wc -c </data1.bin)"
nc "$host" "$port" </data1.bin
echo "XKNET-SENT rc=$?"

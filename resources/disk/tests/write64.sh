#!/bin/sh
# Writes a 64 MiB file of known content to the root file system, syncs, drops the page
# cache and prints the md5 of what reads back from the disk. The expected sum is
#   yes XENKVMDATA0123456789 | head -c 67108864 | md5sum
# and the host can check /data.bin in the image after the guest has powered off.
yes XENKVMDATA0123456789 | head -c 67108864 >/data.bin
sync
echo 3 >/proc/sys/vm/drop_caches
echo "XENKVM-WRITE-DONE $(md5sum /data.bin | cut -d ' ' -f 1)"
poweroff -f

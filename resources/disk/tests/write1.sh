#!/bin/sh
# A small write for slow hosts (tests/nested.rs): 1 MiB of known content to
# /data1.bin, synced; the host reads it back from the image afterwards. The
# expected content is  yes XENKVMDATA0123456789 | head -c 1048576
yes XENKVMDATA0123456789 | head -c 1048576 >/data1.bin
sync
echo "XENKVM-WRITE1-DONE $(md5sum /data1.bin | cut -d ' ' -f 1)"
poweroff -f

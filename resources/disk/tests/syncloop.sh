#!/bin/sh
# Writes /loop/1, /loop/2, ... (1 MiB each), syncing after each and printing
# "XENKVM-SYNCED i". /loop/i holds the first 1048576 bytes of
#   yes XENKVM-LOOP-i
# so after the guest is killed at any point every file reported synced must be intact
# on the disk. Stops (and powers off) when the file system is full.
mkdir -p /loop
i=1
while :; do
    if ! yes "XENKVM-LOOP-$i" | head -c 1048576 >"/loop/$i" ||
        [ "$(wc -c <"/loop/$i")" -ne 1048576 ]; then
        echo "XENKVM-SYNCLOOP-FULL $i"
        rm -f "/loop/$i"
        sync
        break
    fi
    sync
    echo "XENKVM-SYNCED $i"
    i=$((i + 1))
done
poweroff -f

#!/bin/sh
# scripts/demo: a Xen PV image booted from its own disk; show a little, power off.
echo
echo "XENKVM-DEMO: hello from a Xen PV disk image on xenkvm"
uname -a
echo "CPUs: $(grep -c ^processor /proc/cpuinfo)"
echo "Root file system: $(grep ' / ' /proc/mounts | cut -d ' ' -f 1-3)"
df -h / | tail -n 1
echo "Block devices: $(ls /sys/block | tr '\n' ' ')"
date
echo "XENKVM-DEMO: powering off"
poweroff -f

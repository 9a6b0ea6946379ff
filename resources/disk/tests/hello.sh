#!/bin/sh
# The smallest disk test: init ran from the disk.
echo "XENKVM-HELLO"
sync
poweroff -f

# Sourced by get-assets.sh and mkdisk.sh.
# stage_busybox BUSYBOX DIR: a root tree at DIR with /bin/busybox, a symlink per
# applet (the links `busybox --install -s` makes, relative to the tree), the usual
# directories, /etc/passwd and /etc/group for root, and /dev/console when we may
# create device nodes (the kernel's built-in initramfs provides one anyway).
stage_busybox() {
    local bb="$1" root="$2" applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,mnt,root,run,var,lib}
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    while IFS= read -r applet; do
        case "$applet" in
        "" | bin/busybox) continue ;;
        esac
        mkdir -p "$root/$(dirname "$applet")"
        [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done < <("$bb" --list-full)
    [ -L "$root/bin/sh" ] || ln -s /bin/busybox "$root/bin/sh"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
}

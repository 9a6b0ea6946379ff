//! GRUB legacy `menu.lst` / `grub.conf`.

use super::menu::{strip_device, Menu, MenuEntry};

/// Most menu entries accepted.
const MAX_ENTRIES: usize = 10_000;

/// Splits `command rest`, where GRUB legacy also accepts `command=rest`.
fn split_command(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (cmd, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    (cmd, rest)
}

/// Parses a menu.lst. `default saved` is reported as `saved`.
pub fn parse(text: &str) -> Result<Menu, String> {
    let mut menu = Menu::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (cmd, rest) = split_command(line);
        let cmd = cmd.to_ascii_lowercase();
        if cmd == "title" {
            if menu.entries.len() >= MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} menu entries"));
            }
            let n = menu.entries.len();
            menu.entries.push(MenuEntry {
                title: rest.to_string(),
                path: vec![n],
                ..Default::default()
            });
            continue;
        }
        match menu.entries.last_mut() {
            None => match cmd.as_str() {
                "default" => {
                    let v = rest.split_whitespace().next().unwrap_or("");
                    if !v.is_empty() {
                        menu.default = Some(v.to_string());
                    }
                }
                "timeout" => menu.timeout = rest.trim().parse().ok(),
                _ => {} // hiddenmenu, fallback, color, serial, terminal, password ...
            },
            Some(e) => match cmd.as_str() {
                "kernel" => {
                    let mut words = rest.split_whitespace();
                    // `kernel --type=netbsd /x`: skip GRUB's own options.
                    let path = words.by_ref().find(|w| !w.starts_with("--"));
                    if let Some(p) = path {
                        e.kernel = Some(strip_device(p).to_string());
                        e.args = words.collect::<Vec<_>>().join(" ");
                    }
                }
                "initrd" => {
                    if let Some(p) = rest.split_whitespace().next() {
                        e.initrds = vec![strip_device(p).to_string()];
                    }
                }
                _ => {} // root, rootnoverify, module, savedefault, chainloader ...
            },
        }
    }
    Ok(menu)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MENU_LST: &str = "\
# menu.lst - See: grub(8), info grub, update-grub(8)
#            grub-install(8), grub-floppy(8),
#            grub-md5-crypt, /usr/share/doc/grub
#            and /usr/share/doc/grub-legacy-doc/.

## default num
default\t\t1

## timeout sec
timeout\t\t5

hiddenmenu
#fallback 2

### BEGIN AUTOMAGIC KERNELS LIST
## ## End Default Options ##

title\t\tDebian GNU/Linux, kernel 2.6.32-5-xen-amd64
root\t\t(hd0,0)
kernel\t\t/boot/vmlinuz-2.6.32-5-xen-amd64 root=/dev/xvda1 ro console=hvc0
initrd\t\t/boot/initrd.img-2.6.32-5-xen-amd64

title\t\tDebian GNU/Linux, kernel 2.6.32-5-xen-amd64 (single-user mode)
root\t\t(hd0,0)
kernel\t\t(hd0,0)/boot/vmlinuz-2.6.32-5-xen-amd64 root=/dev/xvda1 ro single
initrd\t\t/boot/initrd.img-2.6.32-5-xen-amd64
savedefault

title=Amazon Linux (old style)
root (hd0)
kernel=/boot/vmlinuz-2.6.35 root=LABEL=/ console=hvc0
### END DEBIAN AUTOMAGIC KERNELS LIST
";

    #[test]
    fn debian_menu_lst() {
        let m = parse(MENU_LST).unwrap();
        assert_eq!(m.default.as_deref(), Some("1"));
        assert_eq!(m.timeout, Some(5));
        assert_eq!(m.entries.len(), 3);
        let e = &m.entries[0];
        assert_eq!(e.title, "Debian GNU/Linux, kernel 2.6.32-5-xen-amd64");
        assert_eq!(
            e.kernel.as_deref(),
            Some("/boot/vmlinuz-2.6.32-5-xen-amd64")
        );
        assert_eq!(e.args, "root=/dev/xvda1 ro console=hvc0");
        assert_eq!(e.initrds, ["/boot/initrd.img-2.6.32-5-xen-amd64"]);
        let e = &m.entries[1];
        assert_eq!(
            e.kernel.as_deref(),
            Some("/boot/vmlinuz-2.6.32-5-xen-amd64")
        );
        assert_eq!(e.args, "root=/dev/xvda1 ro single");
        let e = &m.entries[2];
        assert_eq!(e.title, "Amazon Linux (old style)");
        assert_eq!(e.kernel.as_deref(), Some("/boot/vmlinuz-2.6.35"));
        assert!(e.initrds.is_empty());
        assert_eq!(m.find("1"), Some(1));
        assert_eq!(m.find("Amazon Linux (old style)"), Some(2));
    }

    #[test]
    fn default_saved_and_oddities() {
        let m = parse("default saved\ntitle a\nkernel\ninitrd\ntitle\nkernel --type=linux /k x\n")
            .unwrap();
        assert_eq!(m.default.as_deref(), Some("saved"));
        assert_eq!(m.entries[0].kernel, None);
        assert_eq!(m.entries[1].title, "");
        assert_eq!(m.entries[1].kernel.as_deref(), Some("/k"));
        assert_eq!(m.entries[1].args, "x");
        assert!(parse(&"title t\n".repeat(MAX_ENTRIES + 1)).is_err());
    }
}

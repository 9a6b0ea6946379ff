//! The boot menu both config parsers produce, and entry selection.

/// One bootable entry, with where it sits in the menu tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MenuEntry {
    pub title: String,
    /// `--id` of a GRUB 2 menuentry.
    pub id: Option<String>,
    /// Index at each menu level, e.g. `[1, 2]` = third entry of the second top-level item.
    pub path: Vec<usize>,
    /// (title, id) of each enclosing submenu, outermost first.
    pub submenus: Vec<(String, Option<String>)>,
    /// Kernel path as written (device prefixes like `(hd0,1)` removed); None if the
    /// entry does not boot a Linux kernel (chainloader, memtest ...).
    pub kernel: Option<String>,
    /// Kernel command line.
    pub args: String,
    /// Initrd paths; several are concatenated.
    pub initrds: Vec<String>,
}

/// A parsed config: entries in file order (submenus flattened, as `pygrub -l` lists
/// them) and the config's default selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Menu {
    pub entries: Vec<MenuEntry>,
    /// `set default=` / `default`: an index, a title or id, a `>`-separated submenu
    /// path, or `saved`.
    pub default: Option<String>,
    pub timeout: Option<u32>,
}

impl Menu {
    /// Resolves a GRUB default-style selector: `N` (top-level item N; a submenu means
    /// its first entry), `A>B` (each part an index, title or id), or a title or id.
    pub fn find(&self, sel: &str) -> Option<usize> {
        let sel = sel.trim();
        if sel.is_empty() {
            return None;
        }
        let parts: Vec<&str> = sel.split('>').collect();
        // Exact path match: every level named by index, title or id.
        let matches_level = |e: &MenuEntry, level: usize, part: &str| -> bool {
            if let Ok(n) = part.parse::<usize>() {
                return e.path.get(level) == Some(&n);
            }
            let (title, id) = if level < e.submenus.len() {
                (&e.submenus[level].0, &e.submenus[level].1)
            } else {
                (&e.title, &e.id)
            };
            title == part || id.as_deref() == Some(part)
        };
        let exact = self.entries.iter().position(|e| {
            e.path.len() == parts.len()
                && parts
                    .iter()
                    .enumerate()
                    .all(|(l, p)| matches_level(e, l, p))
        });
        if exact.is_some() {
            return exact;
        }
        if parts.len() == 1 {
            let p = parts[0];
            // A top-level index that names a submenu: its first entry.
            if let Ok(n) = p.parse::<usize>() {
                return self.entries.iter().position(|e| e.path.first() == Some(&n));
            }
            // A title or id anywhere in the tree (pygrub matches flattened titles).
            return self
                .entries
                .iter()
                .position(|e| e.title == p || e.id.as_deref() == Some(p));
        }
        None
    }

    /// Resolves pygrub's `--entry=`: a number is an index into the flattened list
    /// (what `pygrub -l` shows); anything else is matched like a default.
    pub fn find_entry_arg(&self, sel: &str) -> Option<usize> {
        match sel.trim().parse::<usize>() {
            Ok(n) => (n < self.entries.len()).then_some(n),
            Err(_) => self.find(sel),
        }
    }

    /// Titles for error messages: "0: Debian", "1: Advanced>Debian, with Linux ..."
    pub fn listing(&self) -> Vec<String> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut t = String::new();
                for (s, _) in &e.submenus {
                    t.push_str(s);
                    t.push('>');
                }
                t.push_str(&e.title);
                format!("{i}: {t}")
            })
            .collect()
    }
}

/// Strips a GRUB device prefix: `(hd0,msdos1)/boot/x` -> `/boot/x`.
pub fn strip_device(path: &str) -> &str {
    if path.starts_with('(') {
        if let Some(close) = path.find(')') {
            return &path[close + 1..];
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(title: &str, path: &[usize], subs: &[&str]) -> MenuEntry {
        MenuEntry {
            title: title.into(),
            id: Some(format!("id-{title}")),
            path: path.to_vec(),
            submenus: subs.iter().map(|s| (s.to_string(), None)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn selection() {
        let m = Menu {
            entries: vec![
                entry("A", &[0], &[]),
                entry("B1", &[1, 0], &["Adv"]),
                entry("B2", &[1, 1], &["Adv"]),
                entry("C", &[2], &[]),
            ],
            ..Default::default()
        };
        assert_eq!(m.find("0"), Some(0));
        assert_eq!(m.find("1"), Some(1), "submenu index: its first entry");
        assert_eq!(m.find("2"), Some(3), "top-level index, not flattened");
        assert_eq!(m.find("1>1"), Some(2));
        assert_eq!(m.find("Adv>B2"), Some(2));
        assert_eq!(m.find("Adv>id-B2"), Some(2));
        assert_eq!(m.find("B2"), Some(2));
        assert_eq!(m.find("id-C"), Some(3));
        assert_eq!(m.find("9"), None);
        assert_eq!(m.find("Adv>nope"), None);
        assert_eq!(m.find(""), None);
        assert_eq!(m.find_entry_arg("2"), Some(2), "--entry=N is flattened");
        assert_eq!(m.find_entry_arg("4"), None);
        assert_eq!(m.find_entry_arg("C"), Some(3));
        assert_eq!(m.listing()[2], "2: Adv>B2");
    }

    #[test]
    fn device_prefix() {
        assert_eq!(strip_device("(hd0,msdos1)/boot/vmlinuz"), "/boot/vmlinuz");
        assert_eq!(strip_device("($root)/vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("/vmlinuz"), "/vmlinuz");
        assert_eq!(strip_device("(broken"), "(broken");
    }
}

//! GRUB 2 `grub.cfg`: enough of the GRUB script language to find the menu.
//!
//! Words are split the way GRUB's lexer does (quotes, backslashes, `#` comments, `;`
//! and newlines between commands, `{` `}` blocks). Conditionals are not evaluated:
//! like pygrub, every `set default=` outside functions and menu entries applies in
//! file order (Debian's `if [ "${next_entry}" ]; then ... else set default="0"`
//! ends up at `0`). Variables are expanded from earlier `set`s, unknown ones to "".
//! Expansion is bounded (`a=$a$a` doubles): a word expanding to more than
//! [`MAX_VALUE`] bytes, or more than [`MAX_EXPANDED`] bytes of expansions in all, fails
//! the parse.

use std::collections::HashMap;

use super::menu::{strip_device, Menu, MenuEntry};

/// Deepest block nesting accepted.
const MAX_DEPTH: usize = 64;
/// Most menu entries accepted.
const MAX_ENTRIES: usize = 10_000;
/// Longest expansion of one word (a variable's value, a command argument, a title).
const MAX_VALUE: usize = 64 << 10;
/// Most bytes all the expansions of one grub.cfg may produce together.
const MAX_EXPANDED: usize = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Var(String),
}

/// One shell word: literal pieces and `$variable` references.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Word {
    segs: Vec<Seg>,
    /// Any part was quoted (so `{` or `}` is not a block delimiter).
    quoted: bool,
}

impl Word {
    fn push_char(&mut self, c: char) {
        match self.segs.last_mut() {
            Some(Seg::Lit(s)) => s.push(c),
            _ => self.segs.push(Seg::Lit(c.to_string())),
        }
    }
    /// Length of the expansion, computed without building it (saturating).
    fn expanded_len(&self, vars: &HashMap<String, String>) -> usize {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.len(),
                Seg::Var(v) => vars.get(v).map_or(0, String::len),
            })
            .fold(0, usize::saturating_add)
    }
    /// The expansion; callers bound its length first ([`Parser::expand`]).
    fn expand(&self, vars: &HashMap<String, String>) -> String {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.as_str(),
                Seg::Var(v) => vars.get(v).map(String::as_str).unwrap_or(""),
            })
            .collect()
    }
    /// The word with variables left as `${name}`.
    fn raw(&self) -> String {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(l) => l.clone(),
                Seg::Var(v) => format!("${{{v}}}"),
            })
            .collect()
    }
    fn is(&self, s: &str) -> bool {
        !self.quoted && matches!(self.segs.as_slice(), [Seg::Lit(l)] if l == s)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(Word),
    /// End of a command: newline or `;`.
    End,
}

/// Splits GRUB script text into words and command ends.
fn lex(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut cur: Option<Word> = None;
    let mut chars = text.chars().peekable();
    let finish = |cur: &mut Option<Word>, out: &mut Vec<Token>| {
        if let Some(w) = cur.take() {
            out.push(Token::Word(w));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => finish(&mut cur, &mut out),
            '\n' | ';' => {
                finish(&mut cur, &mut out);
                out.push(Token::End);
            }
            '#' if cur.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push(Token::End);
                        break;
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {} // line continuation
                Some(n) => cur.get_or_insert_with(Word::default).push_char(n),
                None => {}
            },
            '\'' => {
                let w = cur.get_or_insert_with(Word::default);
                w.quoted = true;
                if w.segs.is_empty() {
                    w.segs.push(Seg::Lit(String::new()));
                }
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push_char(c);
                }
            }
            '"' => {
                let w = cur.get_or_insert_with(Word::default);
                w.quoted = true;
                if w.segs.is_empty() {
                    w.segs.push(Seg::Lit(String::new()));
                }
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&n @ ('$' | '"' | '\\')) => {
                                chars.next();
                                w.push_char(n);
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => w.push_char('\\'),
                        },
                        '$' => lex_var(&mut chars, w),
                        c => w.push_char(c),
                    }
                }
            }
            '$' => lex_var(&mut chars, cur.get_or_insert_with(Word::default)),
            c => cur.get_or_insert_with(Word::default).push_char(c),
        }
    }
    finish(&mut cur, &mut out);
    out.push(Token::End);
    out
}

/// After a `$`: `${name}`, `$name`, `$?`, `$1`; a lone `$` stays literal.
fn lex_var(chars: &mut std::iter::Peekable<std::str::Chars>, w: &mut Word) {
    match chars.peek() {
        Some('{') => {
            chars.next();
            let mut name = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
            w.segs.push(Seg::Var(name));
        }
        Some(&c) if c.is_ascii_alphanumeric() || c == '_' || c == '?' || c == '#' => {
            let mut name = String::new();
            if c == '?' || c == '#' || c.is_ascii_digit() {
                name.push(c);
                chars.next();
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            w.segs.push(Seg::Var(name));
        }
        _ => w.push_char('$'),
    }
}

#[derive(Debug)]
enum Block {
    /// Index into the entry list.
    Entry(usize),
    /// A submenu and the number of items seen in it so far.
    Submenu {
        title: String,
        id: Option<String>,
        items: usize,
    },
    /// A function body or anything else in braces: not menu structure.
    Other,
}

struct Parser {
    menu: Menu,
    vars: HashMap<String, String>,
    stack: Vec<Block>,
    top_items: usize,
    /// Bytes of expansion left ([`MAX_EXPANDED`] at the start).
    budget: usize,
}

/// Parses a grub.cfg. Errors are structural (nesting too deep, too many entries) or
/// expansions past their bounds.
pub fn parse(text: &str) -> Result<Menu, String> {
    let mut p = Parser {
        menu: Menu::default(),
        vars: HashMap::new(),
        stack: Vec::new(),
        top_items: 0,
        budget: MAX_EXPANDED,
    };
    let mut cmd: Vec<Word> = Vec::new();
    for tok in lex(text) {
        match tok {
            Token::Word(w) if w.is("{") => {
                let words = std::mem::take(&mut cmd);
                p.open_block(&words)?;
            }
            Token::Word(w) if w.is("}") => {
                let words = std::mem::take(&mut cmd);
                p.command(&words)?;
                if p.stack.pop().is_none() {
                    log::debug!("pygrub: grub.cfg has an unmatched '}}'");
                }
            }
            Token::Word(w) => cmd.push(w),
            Token::End => {
                let words = std::mem::take(&mut cmd);
                p.command(&words)?;
            }
        }
    }
    if !p.stack.is_empty() {
        log::debug!(
            "pygrub: grub.cfg ends inside {} open block(s)",
            p.stack.len()
        );
    }
    Ok(p.menu)
}

impl Parser {
    /// Expands `w` if its expansion fits [`MAX_VALUE`] and the budget; `what` names
    /// the word in the error.
    fn expand(&mut self, w: &Word, what: impl FnOnce() -> String) -> Result<String, String> {
        let len = w.expanded_len(&self.vars);
        if len > MAX_VALUE {
            return Err(format!(
                "{} expands to more than {} KiB",
                what(),
                MAX_VALUE >> 10
            ));
        }
        if len > self.budget {
            return Err(format!(
                "variables expanded to more than {} MiB in all",
                MAX_EXPANDED >> 20
            ));
        }
        self.budget -= len;
        Ok(w.expand(&self.vars))
    }

    fn in_function(&self) -> bool {
        self.stack.iter().any(|b| matches!(b, Block::Other))
    }

    /// Counts a new item at the current menu level and returns its path.
    fn next_path(&mut self) -> (Vec<usize>, Vec<(String, Option<String>)>) {
        let mut path = Vec::new();
        let mut subs = Vec::new();
        let mut count = &mut self.top_items;
        for b in self.stack.iter_mut() {
            if let Block::Submenu { title, id, items } = b {
                path.push(*count - 1);
                subs.push((title.clone(), id.clone()));
                count = items;
            }
        }
        path.push(*count);
        *count += 1;
        (path, subs)
    }

    fn open_block(&mut self, words: &[Word]) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("blocks nested deeper than {MAX_DEPTH}"));
        }
        let kind = words.first().map(|w| w.raw()).unwrap_or_default();
        let in_menu =
            !self.in_function() && !self.stack.iter().any(|b| matches!(b, Block::Entry(_)));
        let block = match kind.as_str() {
            "menuentry" | "submenu" if in_menu => {
                let (title, id) = self.title_and_id(&words[1..])?;
                let (path, submenus) = self.next_path();
                if kind == "submenu" {
                    Block::Submenu {
                        title,
                        id,
                        items: 0,
                    }
                } else {
                    if self.menu.entries.len() >= MAX_ENTRIES {
                        return Err(format!("more than {MAX_ENTRIES} menu entries"));
                    }
                    self.menu.entries.push(MenuEntry {
                        title,
                        id,
                        path,
                        submenus,
                        ..Default::default()
                    });
                    Block::Entry(self.menu.entries.len() - 1)
                }
            }
            _ => Block::Other,
        };
        self.stack.push(block);
        Ok(())
    }

    /// The title is the first word that is not an option; `--id X` or
    /// `$menuentry_id_option X` gives the id.
    fn title_and_id(&mut self, words: &[Word]) -> Result<(String, Option<String>), String> {
        let mut title = None;
        let mut id = None;
        let mut i = 0;
        while i < words.len() {
            let raw = words[i].raw();
            if raw == "--id" || raw == "${menuentry_id_option}" {
                id = match words.get(i + 1) {
                    Some(w) => Some(self.expand(w, || "a menu entry id".into())?),
                    None => None,
                };
                i += 2;
                continue;
            }
            if matches!(
                raw.as_str(),
                "--class" | "--users" | "--hotkey" | "--source" | "--id-option"
            ) {
                i += 2;
                continue;
            }
            if raw.starts_with("--") && !words[i].quoted {
                i += 1;
                continue;
            }
            if title.is_none() {
                title = Some(self.expand(&words[i], || "a menu entry title".into())?);
            }
            i += 1;
        }
        Ok((title.unwrap_or_default(), id))
    }

    fn command(&mut self, words: &[Word]) -> Result<(), String> {
        let Some(first) = words.first() else {
            return Ok(());
        };
        if self.in_function() {
            return Ok(());
        }
        let name = first.raw();
        let entry = self.stack.iter().rev().find_map(|b| match b {
            Block::Entry(i) => Some(*i),
            _ => None,
        });
        match name.as_str() {
            "set" => {
                for w in &words[1..] {
                    self.assign(w)?;
                }
            }
            "linux" | "linux16" | "linuxefi" | "kernel" => {
                let Some(i) = entry else { return Ok(()) };
                let args = self.args(&name, &words[1..])?;
                if let Some(path) = args.first() {
                    let e = &mut self.menu.entries[i];
                    e.kernel = Some(strip_device(path).to_string());
                    e.args = args[1..]
                        .iter()
                        .filter(|a| !a.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ");
                }
            }
            "initrd" | "initrd16" | "initrdefi" => {
                let Some(i) = entry else { return Ok(()) };
                let args = self.args(&name, &words[1..])?;
                self.menu.entries[i].initrds = args
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(|a| strip_device(a).to_string())
                    .collect();
            }
            _ if name.contains('=') && !first.quoted && words.len() == 1 => self.assign(first)?,
            _ => {}
        }
        Ok(())
    }

    /// The expanded arguments of command `name`.
    fn args(&mut self, name: &str, words: &[Word]) -> Result<Vec<String>, String> {
        words
            .iter()
            .map(|w| self.expand(w, || format!("an argument of `{name}`")))
            .collect()
    }

    /// `name=value` (from `set name=value` or a bare assignment).
    fn assign(&mut self, w: &Word) -> Result<(), String> {
        let raw = w.raw();
        let Some((name, _)) = raw.split_once('=') else {
            return Ok(());
        };
        let name = name.to_string();
        let value = self
            .expand(w, || format!("variable {name}"))?
            .split_once('=')
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        let in_entry = self.stack.iter().any(|b| matches!(b, Block::Entry(_)));
        match name.as_str() {
            "default" if !in_entry => {
                if raw.contains("saved_entry") {
                    self.menu.default = Some("saved".into());
                } else if raw.contains("next_entry") || value.is_empty() {
                    // One-shot `grub-reboot` selection: no next_entry here.
                } else {
                    self.menu.default = Some(value.clone());
                }
            }
            "timeout" if !in_entry => {
                if let Ok(t) = value.trim().parse() {
                    self.menu.timeout = Some(t);
                }
            }
            _ => {}
        }
        self.vars.insert(name, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian 12's update-grub writes (abridged only in repeated boilerplate).
    pub const DEBIAN_CFG: &str = r#"#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
#

### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

if [ "${prev_saved_entry}" ]; then
  set saved_entry="${prev_saved_entry}"
  save_env saved_entry
  set prev_saved_entry=
  save_env prev_saved_entry
  set boot_once=true
fi

function savedefault {
  if [ -z "${boot_once}" ]; then
    saved_entry="${chosen}"
    save_env saved_entry
  fi
}
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  else
    insmod efi_gop
    insmod efi_uga
    insmod ieee1275_fb
    insmod vbe
    insmod vga
    insmod video_bochs
    insmod video_cirrus
  fi
}

if [ x$feature_default_font_path = xy ] ; then
   font=unicode
else
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
if [ x$feature_platform_search_hint = xy ]; then
  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 --hint-baremetal=ahci0,msdos1  5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a
else
  search --no-floppy --fs-uuid --set=root 5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a
fi
    font="/usr/share/grub/unicode.pf2"
fi

if loadfont $font ; then
  set gfxmode=auto
  load_video
  insmod gfxterm
  set locale_dir=$prefix/locale
  set lang=en_US
  insmod gettext
fi
terminal_output gfxterm
if [ "${recordfail}" = 1 ] ; then
  set timeout=30
else
  if [ x$feature_timeout_style = xy ] ; then
    set timeout_style=menu
    set timeout=5
  # Fallback normal timeout code in case the timeout_style feature is
  # unavailable.
  else
    set timeout=5
  fi
fi
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/05_debian_theme ###
set menu_color_normal=cyan/blue
set menu_color_highlight=white/blue
### END /etc/grub.d/05_debian_theme ###

### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
	set gfxpayload="${1}"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	if [ x$feature_platform_search_hint = xy ]; then
	  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 --hint-baremetal=ahci0,msdos1  5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a
	else
	  search --no-floppy --fs-uuid --set=root 5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a
	fi
	echo	'Loading Linux 6.1.0-18-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a ro  quiet
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a' {
		load_video
		insmod gzio
		if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
		insmod part_msdos
		insmod ext2
		set root='hd0,msdos1'
		echo	'Loading Linux 6.1.0-18-amd64 ...'
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a ro  quiet
		echo	'Loading initial ramdisk ...'
		initrd	/boot/initrd.img-6.1.0-18-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-6.1.0-18-amd64-recovery-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a' {
		load_video
		insmod gzio
		set root='hd0,msdos1'
		echo	'Loading Linux 6.1.0-18-amd64 ...'
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a ro single
		echo	'Loading initial ramdisk ...'
		initrd	/boot/initrd.img-6.1.0-18-amd64
	}
	menuentry 'Debian GNU/Linux, with Linux 5.10.0-28-amd64' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-5.10.0-28-amd64-advanced-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a' {
		load_video
		linux	/boot/vmlinuz-5.10.0-28-amd64 root=UUID=5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a ro  quiet
		initrd	/boot/initrd.img-5.10.0-28-amd64
	}
}

### END /etc/grub.d/10_linux ###

### BEGIN /etc/grub.d/30_os-prober ###
### END /etc/grub.d/30_os-prober ###

### BEGIN /etc/grub.d/30_uefi-firmware ###
if [ "$grub_platform" = "efi" ]; then
	fwsetup --is-supported
	if [ "$?" = 0 ]; then
		menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {
			fwsetup
		}
	fi
fi
### END /etc/grub.d/30_uefi-firmware ###

### BEGIN /etc/grub.d/40_custom ###
# This file provides an easy way to add custom menu entries.  Simply type the
# menu entries you want to add after this comment.  Be careful not to change
# the 'exec tail' line above.
### END /etc/grub.d/40_custom ###
"#;

    #[test]
    fn debian_grub_cfg() {
        let m = parse(DEBIAN_CFG).unwrap();
        assert_eq!(m.default.as_deref(), Some("0"));
        assert_eq!(m.timeout, Some(5));
        let titles: Vec<_> = m.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Debian GNU/Linux",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
                "Debian GNU/Linux, with Linux 5.10.0-28-amd64",
                "UEFI Firmware Settings",
            ]
        );
        let e = &m.entries[0];
        assert_eq!(e.kernel.as_deref(), Some("/boot/vmlinuz-6.1.0-18-amd64"));
        assert_eq!(
            e.args,
            "root=UUID=5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a ro quiet"
        );
        assert_eq!(e.initrds, ["/boot/initrd.img-6.1.0-18-amd64"]);
        assert_eq!(
            e.id.as_deref(),
            Some("gnulinux-simple-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a")
        );
        assert_eq!(e.path, [0]);
        let r = &m.entries[2];
        assert_eq!(r.path, [1, 1]);
        assert_eq!(r.submenus[0].0, "Advanced options for Debian GNU/Linux");
        assert!(r.args.ends_with("ro single"));
        let old = &m.entries[3];
        assert_eq!(old.kernel.as_deref(), Some("/boot/vmlinuz-5.10.0-28-amd64"));
        assert_eq!(m.entries[4].kernel, None);
        assert_eq!(m.entries[4].path, [2]);

        assert_eq!(m.find("0"), Some(0));
        assert_eq!(
            m.find("gnulinux-advanced-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a>gnulinux-5.10.0-28-amd64-advanced-5f2c7a4e-0b2b-4a4e-9d8c-1f2e3d4c5b6a"),
            Some(3)
        );
        assert_eq!(
            m.find("Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 5.10.0-28-amd64"),
            Some(3)
        );
        assert_eq!(m.find("1>2"), Some(3));
    }

    #[test]
    fn saved_default_and_timeout() {
        let m = parse(
            "load_env\nset default=\"${saved_entry}\"\nset timeout=10\n\
             menuentry x { linux /vmlinuz }\nmenuentry y { linux16 /vmlinuz2 a=b }\n",
        )
        .unwrap();
        assert_eq!(m.default.as_deref(), Some("saved"));
        assert_eq!(m.timeout, Some(10));
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[1].kernel.as_deref(), Some("/vmlinuz2"));
        assert_eq!(m.entries[1].args, "a=b");
        let m = parse("set default='My title'\n").unwrap();
        assert_eq!(m.default.as_deref(), Some("My title"));
    }

    #[test]
    fn quoting_variables_and_devices() {
        let text = r#"
set vt_handoff=vt.handoff=7
set rootopts="ro quiet"
menuentry "Ubuntu \"LTS\"" --id=ignored-style --class ubuntu {
    linux ($root)/vmlinuz root=/dev/xvda1 $rootopts $vt_handoff 'literal $x' "dq ${vt_handoff}" \
        continued
    initrd (hd0,gpt2)/ucode.img /initrd.img
}
menuentry 'one;line' { linux /k one; initrd /i }
"#;
        let m = parse(text).unwrap();
        assert_eq!(m.entries.len(), 2);
        let e = &m.entries[0];
        assert_eq!(e.title, "Ubuntu \"LTS\"");
        assert_eq!(e.kernel.as_deref(), Some("/vmlinuz"));
        assert_eq!(
            e.args,
            "root=/dev/xvda1 ro quiet vt.handoff=7 literal $x dq vt.handoff=7 continued"
        );
        assert_eq!(e.initrds, ["/ucode.img", "/initrd.img"]);
        let e = &m.entries[1];
        assert_eq!(e.title, "one;line");
        assert_eq!(e.args, "one");
        assert_eq!(e.initrds, ["/i"]);
        assert_eq!(m.default, None);
    }

    #[test]
    fn functions_and_unbalanced_braces_do_not_confuse() {
        let text = "function f {\n set default=7\n menuentry bogus { linux /no }\n}\n\
                    }\n}\nmenuentry real {\n linux /yes\n";
        let m = parse(text).unwrap();
        assert_eq!(m.default, None);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].title, "real");
        assert_eq!(m.entries[0].kernel.as_deref(), Some("/yes"));
    }

    /// Doubling a variable, referring to a big one many times in one word, or keeping
    /// many copies of one: each must fail the parse, not grow without bound. Before
    /// the bound, all three parsed (the first holding a 16 MiB value; 30 lines hold
    /// 1 GiB, and the monitor aborts on allocation failure a few lines later).
    #[test]
    fn variable_expansion_is_bounded() {
        let doubling = format!(
            "a=x\n{}menuentry e {{ linux /k $a }}\n",
            "a=$a$a\n".repeat(24)
        );
        let e = parse(&doubling).expect_err("doubling must fail");
        assert!(e.contains("variable a") && e.contains("KiB"), "{e}");

        // 32 KiB, then one word naming it 64 times (2 MiB).
        let big = format!("a=x\n{}", "a=$a$a\n".repeat(15));
        let wide = format!("{big}set b={}\n", "$a".repeat(64));
        let e = parse(&wide).expect_err("a wide word must fail");
        assert!(e.contains("variable b"), "{e}");
        let wide_arg = format!("{big}menuentry e {{ linux /k {} }}\n", "${a}".repeat(64));
        assert!(parse(&wide_arg).is_err());

        // Each copy within the per-value bound, but 1000 of them (32 MiB) are not.
        let copies: String = (0..1000).map(|i| format!("v{i}=$a\n")).collect();
        let e = parse(&format!("{big}{copies}")).expect_err("copies must fail");
        assert!(e.contains("expanded"), "{e}");

        // What a real grub.cfg does still works, with the values near the bound.
        let m = parse(&format!("{big}menuentry e {{ linux /k $a }}\n")).unwrap();
        assert_eq!(m.entries[0].args.len(), 32 << 10);
    }

    #[test]
    fn hostile_inputs() {
        assert!(parse(&"menuentry x {\n".repeat(100)).is_err());
        assert!(parse(&"menuentry x { }\n".repeat(MAX_ENTRIES + 1)).is_err());
        for t in [
            "\\",
            "'",
            "\"",
            "${",
            "$",
            "{",
            "}",
            "menuentry",
            "linux",
            "\"\\",
        ] {
            let _ = parse(t);
        }
        let m = parse("menuentry {\n linux\n initrd\n}\n").unwrap();
        assert_eq!(m.entries[0].kernel, None);
    }
}

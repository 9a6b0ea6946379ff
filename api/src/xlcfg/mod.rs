//! xl.cfg domain configuration files: the generic grammar, command-line
//! `KEY=VALUE` overrides, and the one domain config model ([`DomainConfig`])
//! shared by xl.cfg files and `xenkvm run` flags.
//!
//! # Use
//!
//! ```
//! use api::xlcfg::{self, DomainConfig};
//!
//! let text = "name = 'web01'\nmemory = 1024\nkernel = '/boot/vmlinuz'\n";
//! let mut raw = xlcfg::parse_str(text, "web01.cfg").unwrap();
//! xlcfg::apply_overrides(&mut raw, &["vcpus=2".to_string()]).unwrap();
//! let (cfg, warnings) = DomainConfig::from_raw(&raw).unwrap();
//! assert_eq!((cfg.memory_mib, cfg.vcpus), (1024, 2));
//! assert!(warnings.is_empty());
//! println!("{}", xlcfg::to_json(&cfg));
//! ```
//!
//! # Grammar (xl.cfg(5), libxlu)
//!
//! - `KEY = VALUE` statements, ended by a newline or `;`; `KEY += VALUE`
//!   appends to an earlier string or list of the same key. A key set
//!   twice takes its last value.
//! - VALUE is a string (`'...'` or `"..."`, on one line; escapes `\'`
//!   `\"` `\\` `\a` `\b` `\f` `\n` `\r` `\t` `\v` `\xHH` `\OOO`), an
//!   integer (decimal, `0`-prefixed octal, `0x` hex, as C's `strtol` with
//!   base 0) or a list `[ v, v, ... ]`. Lists nest, may span lines and may
//!   end with a comma.
//! - `#` starts a comment that runs to the end of the line.
//! - Extension: a backslash at the end of a line continues the statement.
//! - Values are untyped as in libxlu: a key read as an integer also
//!   accepts a string holding one (`memory = "512"`), and a key read as a
//!   string accepts a number (`name = 123`).
//!
//! Command-line overrides ([`apply_overrides`]) use the same grammar, with
//! one addition: an unquoted word is a string (`name=web02`). Each
//! override is parsed as if appended to the file, like xl does, so it
//! replaces (or with `+=`, extends) the file's value. Errors in an
//! override are reported as `command line:N`, N being the override's
//! position (1-based).
//!
//! # Errors and warnings
//!
//! Every [`XlCfgError`] names the file and line; those about a value also
//! name the key, e.g. `guest.cfg:4: memory: expected an integer, got
//! "512M"`. Keys xl does not know, and keys xl knows but xenkvm does not
//! use, produce a [`Warning`] instead (xl itself ignores unknown keys).
//!
//! # JSON (`xenkvm create -n`)
//!
//! [`to_json`] prints [`DomainConfig`] with these fields (every field is
//! always present; unset optional values are `null`):
//!
//! | field | type | from |
//! |---|---|---|
//! | `name` | string | `name` (mandatory) |
//! | `uuid` | string \| null | `uuid`, lower-cased |
//! | `type` | `"pv"` \| `"pvh"` \| `"hvm"` | `type` (by prefix) or `builder` (`generic` = pv); default pv |
//! | `memory_mib` | integer | `memory`; default `maxmem`, else 32 |
//! | `maxmem_mib` | integer | `maxmem`; default `memory_mib` |
//! | `vcpus` | integer | `vcpus`; default 1, values below 1 become 1 |
//! | `maxvcpus` | integer | `maxvcpus`; default `vcpus` |
//! | `kernel`, `ramdisk` | string \| null | `kernel`, `ramdisk` |
//! | `cmdline` | string \| null | `cmdline`, else `"root=ROOT EXTRA"` from `root`/`extra` |
//! | `firmware` | string \| null | `firmware`; PV/PVH: `"pvgrub32"` or `"pvgrub64"` |
//! | `bootloader` | string \| null | `bootloader`, e.g. `"pygrub"` |
//! | `bootloader_args` | [string] | `bootloader_args` (list, or a string split at blanks) |
//! | `disks` | [disk] | `disk`, see [`DiskSpec`] |
//! | `vifs` | [vif] | `vif`, see [`VifSpec`] |
//! | `on_poweroff`, `on_reboot`, `on_crash`, `on_watchdog`, `on_soft_reset` | action | defaults destroy, restart, destroy, destroy, soft-reset |
//! | `serial` | [string] | `serial` (string or list) |
//! | `vnc`, `sdl` | bool \| null | `vnc`, `sdl`: accepted, and ignored by xenkvm |
//!
//! An action is one of `"destroy"`, `"restart"`, `"rename-restart"`,
//! `"preserve"`, `"coredump-destroy"`, `"coredump-restart"`,
//! `"soft-reset"`.
//!
//! A disk: `target` (string \| null; a relative path gets `/dev/`
//! prepended unless a `script` is set), `format` (`raw`, `qcow`, `qcow2`,
//! `vhd`, `qed`, `empty`), `vdev`, `access` (`"rw"` \| `"ro"`), `devtype`
//! (`"disk"` \| `"cdrom"`), `backend`, `backendtype` (`phy`, `qdisk`,
//! `tap`, `standalone`), `script` (e.g. `"block-iscsi"`),
//! `direct_io_safe` (bool), `discard`, `trusted`, `grant_usage` (bool \|
//! null), `specification` (`"xen"` \| `"virtio"` \| null), and `spec`, the
//! string as written.
//!
//! A vif: `devid`, `mac` (`"00:16:3e:4a:10:01"`, lower case, or null for a
//! random one), `bridge`, `model`, `ip`, `script`, `vifname`, `type`
//! (`"vif"` \| `"ioemu"` \| null), `rate` (null or `{ "spec",
//! "bytes_per_sec", "interval_usecs" }`), `mtu`, `vlan`, `backend`,
//! `gatewaydev`, `trusted`, and `spec`, the string as written.
//!
//! # Not supported
//!
//! See [`model`] for the keys that are accepted but ignored.

mod disk;
mod lexer;
pub mod libxl_json;
mod limits;
pub mod model;
mod parser;
pub mod size;
mod vif;

pub use disk::{Access, BackendType, DevType, DiskFormat, DiskSpec, Specification};
pub use limits::{load_checked, Limits};
pub use model::{Action, DomainConfig, DomainType, Warning, WarningKind};
pub use vif::{NicType, VifRate, VifSpec};

/// The file name used in errors and warnings about command-line overrides.
pub const OVERRIDE_FILE: &str = "command line";

/// A failure to read a config. Every variant displays `file:line:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XlCfgError {
    /// A syntax error not covered by a more specific variant.
    #[error("{file}:{line}: {msg}")]
    Syntax {
        file: String,
        line: u32,
        msg: String,
    },
    /// A quoted string without its closing quote on the same line.
    #[error("{file}:{line}: unterminated string (strings end on the line they start)")]
    UnterminatedString { file: String, line: u32 },
    /// A bad backslash escape inside a quoted string.
    #[error("{file}:{line}: {msg}")]
    BadEscape {
        file: String,
        line: u32,
        msg: String,
    },
    /// A list whose `[` (at `line`) is never closed.
    #[error("{file}:{line}: {key}: unterminated list: `[` is never closed (ran into {found})")]
    UnterminatedList {
        file: String,
        line: u32,
        key: String,
        found: String,
    },
    /// A token starting with a digit that is not an integer (`512M`).
    #[error("{file}:{line}: bad number `{text}` (expected a decimal, 0-octal or 0x-hex integer; quote strings)")]
    BadNumber {
        file: String,
        line: u32,
        text: String,
    },
    /// A setting name not followed by `=` or `+=`.
    #[error("{file}:{line}: {key}: expected `=` after the setting name, got {found}")]
    MissingEquals {
        file: String,
        line: u32,
        key: String,
        found: String,
    },
    /// A well-formed value that is wrong for its key.
    #[error("{file}:{line}: {key}: {msg}")]
    BadValue {
        file: String,
        line: u32,
        key: String,
        msg: String,
    },
    /// A mandatory key is missing; `line` is the last line of the file.
    #[error("{file}:{line}: {key}: {msg}")]
    Missing {
        file: String,
        line: u32,
        key: String,
        msg: String,
    },
}

impl XlCfgError {
    /// The line the error is reported at.
    pub fn line(&self) -> u32 {
        match self {
            XlCfgError::Syntax { line, .. }
            | XlCfgError::UnterminatedString { line, .. }
            | XlCfgError::BadEscape { line, .. }
            | XlCfgError::UnterminatedList { line, .. }
            | XlCfgError::BadNumber { line, .. }
            | XlCfgError::MissingEquals { line, .. }
            | XlCfgError::BadValue { line, .. }
            | XlCfgError::Missing { line, .. } => *line,
        }
    }

    /// The file (or [`OVERRIDE_FILE`]) the error is reported in.
    pub fn file(&self) -> &str {
        match self {
            XlCfgError::Syntax { file, .. }
            | XlCfgError::UnterminatedString { file, .. }
            | XlCfgError::BadEscape { file, .. }
            | XlCfgError::UnterminatedList { file, .. }
            | XlCfgError::BadNumber { file, .. }
            | XlCfgError::MissingEquals { file, .. }
            | XlCfgError::BadValue { file, .. }
            | XlCfgError::Missing { file, .. } => file,
        }
    }
}

/// How a setting was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `key = value`
    Assign,
    /// `key += value`; the stored value already includes the earlier one.
    Append,
}

/// A parsed value and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub line: u32,
    pub kind: ValueKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// A quoted string (or, in overrides, a bare word).
    String(String),
    /// An integer: the text as written and its value.
    Number(String, i64),
    List(Vec<Value>),
}

impl Value {
    /// The value as a string atom: strings as they are, numbers as
    /// written; None for lists.
    pub fn as_atom(&self) -> Option<&str> {
        match &self.kind {
            ValueKind::String(s) => Some(s),
            ValueKind::Number(t, _) => Some(t),
            ValueKind::List(_) => None,
        }
    }

    /// How the value is shown in error messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            ValueKind::String(s) => format!("{s:?}"),
            ValueKind::Number(t, _) => t.clone(),
            ValueKind::List(_) => "a list".to_string(),
        }
    }
}

/// One `key = value` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Value,
    /// The file it came from, or [`OVERRIDE_FILE`].
    pub file: String,
    /// The line of the key.
    pub line: u32,
    pub op: Op,
}

/// The settings of a config file (plus overrides), in order, before any
/// interpretation of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConfig {
    /// The config file's name as given to [`parse_str`].
    pub file: String,
    /// Every statement in order; a later setting of a key wins.
    pub settings: Vec<Setting>,
    /// The last line of the file (where "missing key" errors point).
    pub end_line: u32,
}

impl RawConfig {
    /// An empty config, e.g. to build one from overrides only.
    pub fn new(file: &str) -> Self {
        RawConfig {
            file: file.to_string(),
            settings: Vec::new(),
            end_line: 1,
        }
    }

    /// The setting in effect for `key` (the last one).
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().rev().find(|s| s.key == key)
    }

    /// The settings in effect, one per key, in order of first appearance.
    pub fn effective(&self) -> Vec<&Setting> {
        let mut out: Vec<&Setting> = Vec::new();
        for s in &self.settings {
            if !out.iter().any(|o| o.key == s.key) {
                out.push(self.get(&s.key).expect("key exists"));
            }
        }
        out
    }
}

/// Parses xl.cfg text. `file` is used in error messages and warnings.
pub fn parse_str(text: &str, file: &str) -> Result<RawConfig, XlCfgError> {
    let mut raw = RawConfig::new(file);
    parser::Parser::new(text, file, 1, false).parse_into(&mut raw)?;
    raw.end_line = u32::try_from(text.lines().count().max(1)).unwrap_or(u32::MAX);
    Ok(raw)
}

/// Applies command-line overrides such as `memory=2048`,
/// `name=web02` (bare words are strings), `disk=['/img,,xvda']` or
/// `'vcpus=2; maxvcpus=4'`, in order, after the file's own settings.
pub fn apply_overrides(raw: &mut RawConfig, overrides: &[String]) -> Result<(), XlCfgError> {
    for (i, ov) in overrides.iter().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        parser::Parser::new(ov, OVERRIDE_FILE, line, true).parse_into(raw)?;
    }
    Ok(())
}

/// Parses `text`, applies `overrides` and builds the domain config.
pub fn load(
    text: &str,
    file: &str,
    overrides: &[String],
) -> Result<(DomainConfig, Vec<Warning>), XlCfgError> {
    let mut raw = parse_str(text, file)?;
    apply_overrides(&mut raw, overrides)?;
    DomainConfig::from_raw(&raw)
}

/// The config as pretty-printed JSON (field names in the module docs).
pub fn to_json(cfg: &DomainConfig) -> String {
    serde_json::to_string_pretty(cfg).expect("DomainConfig always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(raw: &RawConfig, key: &str) -> String {
        raw.get(key).unwrap().value.as_atom().unwrap().to_string()
    }

    fn list_atoms(v: &Value) -> Vec<String> {
        match &v.kind {
            ValueKind::List(items) => items
                .iter()
                .map(|i| i.as_atom().unwrap().to_string())
                .collect(),
            _ => panic!("not a list"),
        }
    }

    #[test]
    fn both_quote_styles_and_numbers() {
        let raw = parse_str(
            "a = 'single \"x\"'\nb = \"double 'y'\"\nc = 0x10\nd = 010\ne = 7\n",
            "t.cfg",
        )
        .unwrap();
        assert_eq!(atom(&raw, "a"), "single \"x\"");
        assert_eq!(atom(&raw, "b"), "double 'y'");
        assert_eq!(
            raw.get("c").unwrap().value.kind,
            ValueKind::Number("0x10".into(), 16)
        );
        assert_eq!(
            raw.get("d").unwrap().value.kind,
            ValueKind::Number("010".into(), 8)
        );
        assert_eq!(raw.get("e").unwrap().line, 5);
    }

    #[test]
    fn comments_after_values_and_semicolons() {
        let raw = parse_str(
            "# header\nname = 'x' # the name\nmemory = 512; vcpus = 2 # two\n\n   # indented\n",
            "t.cfg",
        )
        .unwrap();
        assert_eq!(atom(&raw, "name"), "x");
        assert_eq!(atom(&raw, "memory"), "512");
        assert_eq!(raw.get("vcpus").unwrap().line, 3);
        assert_eq!(raw.settings.len(), 3);
        assert_eq!(raw.end_line, 5);
    }

    #[test]
    fn a_hash_inside_a_string_is_not_a_comment() {
        let raw = parse_str("extra = 'a#b' # c\n", "t.cfg").unwrap();
        assert_eq!(atom(&raw, "extra"), "a#b");
    }

    #[test]
    fn multi_line_lists_and_trailing_comma() {
        let text = "disk = [\n  'a', # first\n\n  'b',\n]\nvif = []\nx = [ [1, 2], 'y' ]\n";
        let raw = parse_str(text, "t.cfg").unwrap();
        let disk = &raw.get("disk").unwrap().value;
        assert_eq!(list_atoms(disk), ["a", "b"]);
        match &disk.kind {
            ValueKind::List(items) => assert_eq!((items[0].line, items[1].line), (2, 4)),
            _ => unreachable!(),
        }
        assert_eq!(raw.get("vif").unwrap().line, 6);
        assert_eq!(
            list_atoms(&raw.get("vif").unwrap().value),
            Vec::<String>::new()
        );
        match &raw.get("x").unwrap().value.kind {
            ValueKind::List(items) => {
                assert_eq!(list_atoms(&items[0]), ["1", "2"]);
                assert_eq!(items[1].as_atom(), Some("y"));
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn backslash_line_continuation() {
        let raw = parse_str("extra = \\\n  'console=hvc0'\nname = 'n'\n", "t.cfg").unwrap();
        assert_eq!(atom(&raw, "extra"), "console=hvc0");
        assert_eq!(raw.get("name").unwrap().line, 3);
    }

    #[test]
    fn plus_equals_appends() {
        let raw = parse_str(
            "extra = 'a'\nextra += ' b'\ndisk = ['x']\ndisk += ['y']\nnew += 'z'\n",
            "t.cfg",
        )
        .unwrap();
        assert_eq!(atom(&raw, "extra"), "a b");
        assert_eq!(list_atoms(&raw.get("disk").unwrap().value), ["x", "y"]);
        assert_eq!(atom(&raw, "new"), "z");
        let e = parse_str("a = [1]\na += 'x'\n", "t.cfg").unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
        let e = parse_str("a = 1\na += 2\n", "t.cfg").unwrap_err();
        assert_eq!(e.line(), 2, "{e}");
    }

    #[test]
    fn later_settings_win() {
        let raw = parse_str("memory = 1\nmemory = 2\n", "t.cfg").unwrap();
        assert_eq!(atom(&raw, "memory"), "2");
        assert_eq!(raw.effective().len(), 1);
    }

    #[test]
    fn empty_and_comment_only_files() {
        assert!(parse_str("", "t.cfg").unwrap().settings.is_empty());
        assert!(parse_str("# nothing\n\n;;\n", "t.cfg")
            .unwrap()
            .settings
            .is_empty());
        // No newline at the end of the last statement.
        assert_eq!(atom(&parse_str("name='x'", "t.cfg").unwrap(), "name"), "x");
    }

    fn err(text: &str) -> XlCfgError {
        parse_str(text, "bad.cfg").unwrap_err()
    }

    #[test]
    fn malformed_unterminated_string() {
        let e = err("name = 'a'\nkernel = '/boot/vmlinuz\nmemory = 5\n");
        assert!(
            matches!(e, XlCfgError::UnterminatedString { line: 2, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "bad.cfg:2: unterminated string (strings end on the line they start)"
        );
        let e = err("\n\nname = \"abc");
        assert!(
            matches!(e, XlCfgError::UnterminatedString { line: 3, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_unterminated_list() {
        let e = err("name = 'a'\ndisk = [ 'x',\n  'y'\nvif = [ '' ]\n");
        assert!(
            matches!(e, XlCfgError::UnterminatedList { line: 2, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("bad.cfg:2: disk: unterminated list"),
            "{e}"
        );
        assert!(e.to_string().contains("`vif` at line 4"), "{e}");
        let e = err("name = 'a'\ndisk = [ 'x',\n");
        assert!(
            matches!(e, XlCfgError::UnterminatedList { line: 2, .. }),
            "{e:?}"
        );
        // A missing comma on the same line is a plain syntax error there.
        let e = err("\ndisk = [ 'x' 'y' ]\n");
        assert!(matches!(e, XlCfgError::Syntax { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn malformed_bad_number() {
        let e = err("name = 'a'\nmemory = 512X\n");
        assert_eq!(
            e,
            XlCfgError::BadNumber {
                file: "bad.cfg".into(),
                line: 2,
                text: "512X".into()
            }
        );
        assert!(
            e.to_string().starts_with("bad.cfg:2: bad number `512X`"),
            "{e}"
        );
        // A size with a unit is a string (the model reads it as a size).
        let raw = parse_str("memory = 512M\nmaxmem = 1.5GiB\n", "ok.cfg").unwrap();
        assert_eq!(atom(&raw, "memory"), "512M");
        assert_eq!(atom(&raw, "maxmem"), "1.5GiB");
        assert_eq!(err("\n\nvcpus = 08\n").line(), 3);
        assert_eq!(err("x = [1, 2x]\n").line(), 1);
    }

    #[test]
    fn malformed_missing_equals() {
        let e = err("name = 'a'\nmemory 512\n");
        assert!(
            matches!(&e, XlCfgError::MissingEquals { line: 2, key, .. } if key == "memory"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "bad.cfg:2: memory: expected `=` after the setting name, got number 512"
        );
        assert_eq!(err("\n\nname\n").line(), 3);
        assert_eq!(err("name : 'x'\n").line(), 1);
    }

    #[test]
    fn malformed_other_syntax() {
        // Unquoted word as a value.
        let e = err("\nname = web01\n");
        assert!(matches!(e, XlCfgError::Syntax { line: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("quote strings"), "{e}");
        // Missing value.
        assert_eq!(err("a = 1\nb =\n").line(), 2);
        // Two values.
        assert_eq!(err("a = 1 2\n").line(), 1);
        // Python.
        let e = err("a = 1\nimport os\nb = os.path()\n");
        assert_eq!(e.line(), 2, "{e}");
        let e = err("a = 1\n\nb = (1)\n");
        assert!(e.to_string().contains("Python"), "{e}");
        assert_eq!(e.line(), 3);
        // A stray backslash.
        assert_eq!(err("a = 1 \\ 2\n").line(), 1);
        // A bad escape.
        assert!(matches!(
            err("\na = '\\q'\n"),
            XlCfgError::BadEscape { line: 2, .. }
        ));
    }

    #[test]
    fn overrides_replace_and_extend() {
        let mut raw = parse_str("name = 'a'\nmemory = 512\ndisk = ['x']\n", "t.cfg").unwrap();
        apply_overrides(
            &mut raw,
            &[
                "memory=2048".to_string(),
                "name=web02".to_string(),
                "disk+=['y,,xvdb']; vcpus = 2".to_string(),
                "extra=console=hvc0 quiet".to_string(),
                "cpus=[0, 2-3]".to_string(),
            ],
        )
        .unwrap();
        assert_eq!(
            raw.get("memory").unwrap().value.kind,
            ValueKind::Number("2048".into(), 2048)
        );
        assert_eq!(raw.get("memory").unwrap().file, OVERRIDE_FILE);
        assert_eq!(raw.get("memory").unwrap().line, 1);
        assert_eq!(atom(&raw, "name"), "web02");
        assert_eq!(
            list_atoms(&raw.get("disk").unwrap().value),
            ["x", "y,,xvdb"]
        );
        assert_eq!(atom(&raw, "vcpus"), "2");
        assert_eq!(raw.get("vcpus").unwrap().line, 3);
        assert_eq!(atom(&raw, "extra"), "console=hvc0 quiet");
        assert_eq!(list_atoms(&raw.get("cpus").unwrap().value), ["0", "2-3"]);
        // The file's own end line is kept for "missing key" errors.
        assert_eq!(raw.end_line, 3);
    }

    #[test]
    fn override_errors_name_the_argument() {
        let mut raw = parse_str("name = 'a'\n", "t.cfg").unwrap();
        let e = apply_overrides(&mut raw, &["memory=1".into(), "disk=['x'".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("command line:2: disk: unterminated list"),
            "{e}"
        );
        let e = apply_overrides(&mut raw, &["novalue".into()]).unwrap_err();
        assert!(
            matches!(e, XlCfgError::MissingEquals { line: 1, .. }),
            "{e:?}"
        );
        apply_overrides(&mut raw, &["memory=512M".into()]).unwrap();
        assert_eq!(atom(&raw, "memory"), "512M");
    }
}

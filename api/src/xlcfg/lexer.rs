//! Tokens of the xl.cfg grammar (libxlu's `libxlu_cfg_l.l`, re-done by hand).
//!
//! Differences from libxlu, all on the lenient side except numbers:
//! - setting names may also contain upper-case letters and `-` (libxlu
//!   takes `[a-z][._0-9a-z]*`); such names are unknown to xl anyway and
//!   end up as "unknown key" warnings;
//! - `\r` is whitespace, so files with CRLF line ends parse;
//! - a backslash at the end of a line (outside a string) continues the
//!   statement on the next line (xm-era Python habit; libxlu rejects it);
//! - numeric escapes in strings (`\xHH`, `\OOO`) produce the character
//!   they name (libxlu's own implementation drops them);
//! - a number token is validated here: `12ab`, `08` and `1.5` are
//!   errors at the line they are on, whichever key they belong to;
//! - a size with a unit (`512M`, `1G`, `1.5GiB`, see [`super::size`]) is
//!   read as a string, so `memory = 1G` needs no quotes.

use super::XlCfgError;

/// One token and the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A setting name.
    Ident(String),
    /// A quoted string, escapes resolved.
    Str(String),
    /// An integer as written, and its value.
    Num(String, i64),
    /// An unquoted word in value position (command-line overrides only).
    Bare(String),
    LBracket,
    RBracket,
    Comma,
    Assign,
    AddAssign,
    Semi,
    Newline,
    Eof,
}

impl Tok {
    /// How the token is named in error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Num(t, _) => format!("number {t}"),
            Tok::Bare(s) => format!("`{s}`"),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Assign => "`=`".into(),
            Tok::AddAssign => "`+=`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

/// What the parser expects next; only matters with bare words enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Anywhere but a value position.
    Normal,
    /// A value at the top level of a statement.
    Value,
    /// A value inside a list.
    ListValue,
}

pub(crate) struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    line: u32,
    file: &'a str,
    /// Accept unquoted words as string values (command-line overrides).
    bare_words: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(text: &str, file: &'a str, first_line: u32, bare_words: bool) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            line: first_line,
            file,
            bare_words,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, off: usize) -> Option<char> {
        self.chars.get(self.pos + off).copied()
    }

    fn err_syntax(&self, line: u32, msg: impl Into<String>) -> XlCfgError {
        XlCfgError::Syntax {
            file: self.file.to_string(),
            line,
            msg: msg.into(),
        }
    }

    /// Skips blanks, comments and backslash-newline continuations.
    fn skip_blanks(&mut self) -> Result<(), XlCfgError> {
        while let Some(c) = self.peek_char() {
            match c {
                ' ' | '\t' | '\r' | '\x0c' => self.pos += 1,
                '#' => {
                    while let Some(c) = self.peek_char() {
                        if c == '\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                '\\' => {
                    // A continuation: backslash, optional blanks, newline.
                    let mut off = 1;
                    while matches!(self.peek_at(off), Some(' ' | '\t' | '\r')) {
                        off += 1;
                    }
                    match self.peek_at(off) {
                        Some('\n') => {
                            self.pos += off + 1;
                            self.line += 1;
                        }
                        None => {
                            self.pos += off;
                        }
                        Some(_) => {
                            return Err(self.err_syntax(
                                self.line,
                                "stray backslash (only allowed at the end of a line or inside a string)",
                            ))
                        }
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    pub fn next_token(&mut self, mode: Mode) -> Result<Token, XlCfgError> {
        self.skip_blanks()?;
        let line = self.line;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                tok: Tok::Eof,
                line,
            });
        };
        let simple = |tok| Ok(Token { tok, line });
        match c {
            '\n' => {
                self.pos += 1;
                self.line += 1;
                simple(Tok::Newline)
            }
            '[' => {
                self.pos += 1;
                simple(Tok::LBracket)
            }
            ']' => {
                self.pos += 1;
                simple(Tok::RBracket)
            }
            ',' => {
                self.pos += 1;
                simple(Tok::Comma)
            }
            ';' => {
                self.pos += 1;
                simple(Tok::Semi)
            }
            '=' => {
                self.pos += 1;
                simple(Tok::Assign)
            }
            '+' if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                simple(Tok::AddAssign)
            }
            '\'' | '"' => {
                let s = self.string(c)?;
                simple(Tok::Str(s))
            }
            _ if self.bare_words && mode != Mode::Normal => {
                let word = self.bare_word(mode);
                match parse_number(&word) {
                    Some(v) => simple(Tok::Num(word, v)),
                    None => simple(Tok::Bare(word)),
                }
            }
            '0'..='9' => {
                let start = self.pos;
                while matches!(self.peek_char(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                match parse_number(&text) {
                    Some(v) => simple(Tok::Num(text, v)),
                    None if super::size::is_size_word(&text) => simple(Tok::Str(text)),
                    None => Err(XlCfgError::BadNumber {
                        file: self.file.to_string(),
                        line,
                        text,
                    }),
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while matches!(self.peek_char(), Some(c) if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                simple(Tok::Ident(text))
            }
            other => {
                let hint = if matches!(other, '(' | ')' | ':' | '.' | '-' | '+' | '{' | '}') {
                    " (this looks like Python; xl.cfg is not Python)"
                } else {
                    ""
                };
                Err(self.err_syntax(line, format!("unexpected character {other:?}{hint}")))
            }
        }
    }

    /// An unquoted word: up to `;`, a newline or the end, and inside a
    /// list also up to `,` or `]`; surrounding blanks are dropped.
    fn bare_word(&mut self, mode: Mode) -> String {
        let start = self.pos;
        while let Some(c) = self.peek_char() {
            if c == ';' || c == '\n' || (mode == Mode::ListValue && (c == ',' || c == ']')) {
                break;
            }
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        word.trim().to_string()
    }

    /// A quoted string starting at the current position; `quote` is `'`
    /// or `"`. Strings cannot span lines.
    fn string(&mut self, quote: char) -> Result<String, XlCfgError> {
        let line = self.line;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(XlCfgError::UnterminatedString {
                    file: self.file.to_string(),
                    line,
                });
            };
            self.pos += 1;
            match c {
                '\n' => {
                    return Err(XlCfgError::UnterminatedString {
                        file: self.file.to_string(),
                        line,
                    })
                }
                c if c == quote => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek_char() else {
                        return Err(XlCfgError::UnterminatedString {
                            file: self.file.to_string(),
                            line,
                        });
                    };
                    if e == '\n' {
                        return Err(XlCfgError::UnterminatedString {
                            file: self.file.to_string(),
                            line,
                        });
                    }
                    self.pos += 1;
                    let ch = match e {
                        '"' | '\'' | '\\' => e,
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        'x' => {
                            let mut v = 0u32;
                            let mut n = 0;
                            while n < 2 {
                                match self.peek_char().and_then(|c| c.to_digit(16)) {
                                    Some(d) => {
                                        v = v * 16 + d;
                                        n += 1;
                                        self.pos += 1;
                                    }
                                    None => break,
                                }
                            }
                            if n == 0 {
                                return Err(self.bad_escape(line, "`\\x` needs hex digits"));
                            }
                            char::from_u32(v).unwrap_or('\u{fffd}')
                        }
                        '0'..='7' => {
                            let mut v = e.to_digit(8).unwrap_or(0);
                            let mut n = 1;
                            while n < 3 {
                                match self.peek_char().and_then(|c| c.to_digit(8)) {
                                    Some(d) => {
                                        v = v * 8 + d;
                                        n += 1;
                                        self.pos += 1;
                                    }
                                    None => break,
                                }
                            }
                            char::from_u32(v).unwrap_or('\u{fffd}')
                        }
                        other => {
                            return Err(self.bad_escape(
                                line,
                                format!("unknown escape `\\{other}` in quoted string"),
                            ))
                        }
                    };
                    out.push(ch);
                }
                c => out.push(c),
            }
        }
    }

    fn bad_escape(&self, line: u32, msg: impl Into<String>) -> XlCfgError {
        XlCfgError::BadEscape {
            file: self.file.to_string(),
            line,
            msg: msg.into(),
        }
    }
}

/// Parses an integer the way C's `strtol(s, &end, 0)` does when it has to
/// consume the whole string: optional blanks and sign, then decimal,
/// `0`-prefixed octal or `0x`-prefixed hex. None if invalid or out of
/// range for i64.
pub(crate) fn parse_number(s: &str) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<Tok> {
        let mut lx = Lexer::new(text, "t.cfg", 1, false);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token(Mode::Normal).unwrap();
            let eof = t.tok == Tok::Eof;
            out.push(t.tok);
            if eof {
                return out;
            }
        }
    }

    #[test]
    fn numbers_follow_strtol_base_0() {
        assert_eq!(parse_number("512"), Some(512));
        assert_eq!(parse_number("0x1F"), Some(31));
        assert_eq!(parse_number("010"), Some(8));
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number(" 42"), Some(42));
        assert_eq!(parse_number("-3"), Some(-3));
        assert_eq!(parse_number("08"), None);
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("512M"), None);
        assert_eq!(parse_number("two"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("99999999999999999999"), None);
    }

    #[test]
    fn tokens_of_a_statement() {
        assert_eq!(
            toks("disk = [ 'a', \"b\" ] # c\nx+=1;"),
            vec![
                Tok::Ident("disk".into()),
                Tok::Assign,
                Tok::LBracket,
                Tok::Str("a".into()),
                Tok::Comma,
                Tok::Str("b".into()),
                Tok::RBracket,
                Tok::Newline,
                Tok::Ident("x".into()),
                Tok::AddAssign,
                Tok::Num("1".into(), 1),
                Tok::Semi,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            toks(r#"'it\'s' "a\"b\\c\td" '\x41\101\n'"#)[..3],
            [
                Tok::Str("it's".into()),
                Tok::Str("a\"b\\c\td".into()),
                Tok::Str("AA\n".into()),
            ]
        );
        // The other quote needs no escape.
        assert_eq!(toks(r#"'say "hi"'"#)[0], Tok::Str("say \"hi\"".into()));
        assert_eq!(toks(r#""it's""#)[0], Tok::Str("it's".into()));
    }

    #[test]
    fn bad_escape_is_an_error() {
        let mut lx = Lexer::new("\n'a\\qb'", "t.cfg", 1, false);
        assert_eq!(lx.next_token(Mode::Normal).unwrap().tok, Tok::Newline);
        let e = lx.next_token(Mode::Normal).unwrap_err();
        assert!(matches!(e, XlCfgError::BadEscape { line: 2, .. }), "{e}");
    }

    #[test]
    fn continuation_and_crlf() {
        assert_eq!(
            toks("a = \\\r\n  1\r\n"),
            vec![
                Tok::Ident("a".into()),
                Tok::Assign,
                Tok::Num("1".into(), 1),
                Tok::Newline,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn bare_words_only_in_value_mode() {
        let mut lx = Lexer::new("foo bar, 12 ]", "cl", 1, true);
        assert_eq!(
            lx.next_token(Mode::ListValue).unwrap().tok,
            Tok::Bare("foo bar".into())
        );
        assert_eq!(lx.next_token(Mode::ListValue).unwrap().tok, Tok::Comma);
        assert_eq!(
            lx.next_token(Mode::ListValue).unwrap().tok,
            Tok::Num("12".into(), 12)
        );
        assert_eq!(lx.next_token(Mode::ListValue).unwrap().tok, Tok::RBracket);
    }
}

//! The xl.cfg grammar (libxlu's `libxlu_cfg_y.y`):
//!
//! ```text
//! file      := { stmt }
//! stmt      := [ IDENT ( "=" | "+=" ) value ] ( NEWLINE | ";" | EOF )
//! value     := STRING | NUMBER | "[" nl* [ value nl* { "," nl* value nl* } [ "," nl* ] ] "]"
//! ```
//!
//! Unlike libxlu, parsing stops at the first error.

use super::lexer::{Lexer, Mode, Tok, Token};
use super::{Op, RawConfig, Setting, Value, ValueKind, XlCfgError};

pub(crate) struct Parser<'a> {
    lx: Lexer<'a>,
    file: &'a str,
    peeked: Option<Token>,
}

impl<'a> Parser<'a> {
    pub fn new(text: &str, file: &'a str, first_line: u32, bare_words: bool) -> Self {
        Parser {
            lx: Lexer::new(text, file, first_line, bare_words),
            file,
            peeked: None,
        }
    }

    fn peek(&mut self, mode: Mode) -> Result<&Token, XlCfgError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lx.next_token(mode)?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self, mode: Mode) -> Result<Token, XlCfgError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lx.next_token(mode),
        }
    }

    fn syntax(&self, line: u32, msg: impl Into<String>) -> XlCfgError {
        XlCfgError::Syntax {
            file: self.file.to_string(),
            line,
            msg: msg.into(),
        }
    }

    /// Parses every statement into `raw`, after what it already holds.
    pub fn parse_into(mut self, raw: &mut RawConfig) -> Result<(), XlCfgError> {
        loop {
            let t = self.next(Mode::Normal)?;
            match t.tok {
                Tok::Eof => break,
                Tok::Newline | Tok::Semi => continue,
                Tok::Ident(key) => self.statement(raw, key, t.line)?,
                other => {
                    return Err(self.syntax(
                        t.line,
                        format!("expected a setting name, got {}", other.describe()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn statement(&mut self, raw: &mut RawConfig, key: String, line: u32) -> Result<(), XlCfgError> {
        let op_tok = self.next(Mode::Normal)?;
        let op = match op_tok.tok {
            Tok::Assign => Op::Assign,
            Tok::AddAssign => Op::Append,
            other => {
                return Err(XlCfgError::MissingEquals {
                    file: self.file.to_string(),
                    line,
                    key,
                    found: other.describe(),
                })
            }
        };
        let value = self.value(&key, Mode::Value)?;
        let end = self.next(Mode::Normal)?;
        match end.tok {
            Tok::Newline | Tok::Semi | Tok::Eof => {}
            other => {
                return Err(self.syntax(
                    end.line,
                    format!(
                        "expected end of line or `;` after the value of `{key}`, got {}",
                        other.describe()
                    ),
                ))
            }
        }
        let value = match op {
            Op::Assign => value,
            Op::Append => match raw.get(&key) {
                None => value,
                Some(prev) => self.concat(&key, line, &prev.value, value)?,
            },
        };
        raw.settings.push(Setting {
            key,
            value,
            file: self.file.to_string(),
            line,
            op,
        });
        Ok(())
    }

    /// `+=`: joins strings, or appends list items (libxlu semantics).
    fn concat(&self, key: &str, line: u32, prev: &Value, add: Value) -> Result<Value, XlCfgError> {
        let kind = match (&prev.kind, add.kind) {
            (ValueKind::String(a), ValueKind::String(b)) => ValueKind::String(format!("{a}{b}")),
            (ValueKind::List(a), ValueKind::List(b)) => {
                let mut items = a.clone();
                items.extend(b);
                ValueKind::List(items)
            }
            (ValueKind::Number(..), _) | (_, ValueKind::Number(..)) => {
                return Err(self.syntax(line, format!("`{key}`: can't use `+=` with numbers")))
            }
            _ => {
                return Err(self.syntax(
                    line,
                    format!("`{key}`: can't add a [list] to a \"string\" or vice versa"),
                ))
            }
        };
        Ok(Value {
            line: prev.line,
            kind,
        })
    }

    fn value(&mut self, key: &str, mode: Mode) -> Result<Value, XlCfgError> {
        let t = self.next(mode)?;
        let kind = match t.tok {
            Tok::Str(s) | Tok::Bare(s) => ValueKind::String(s),
            Tok::Num(text, v) => ValueKind::Number(text, v),
            Tok::LBracket => return self.list(key, t.line),
            Tok::Ident(w) => {
                return Err(self.syntax(
                    t.line,
                    format!(
                    "`{key}`: expected a value, got the bare word `{w}`; quote strings, e.g. '{w}'"
                ),
                ))
            }
            other => {
                return Err(self.syntax(
                    t.line,
                    format!(
                        "`{key}`: expected a value (a quoted string, a number or a [list]), got {}",
                        other.describe()
                    ),
                ))
            }
        };
        Ok(Value { line: t.line, kind })
    }

    fn skip_newlines(&mut self) -> Result<(), XlCfgError> {
        while self.peek(Mode::ListValue)?.tok == Tok::Newline {
            self.next(Mode::ListValue)?;
        }
        Ok(())
    }

    /// The rest of a list whose `[` was on `open_line`.
    fn list(&mut self, key: &str, open_line: u32) -> Result<Value, XlCfgError> {
        let mut items = Vec::new();
        loop {
            self.skip_newlines()?;
            if self.peek(Mode::ListValue)?.tok == Tok::RBracket {
                self.next(Mode::ListValue)?;
                break;
            }
            self.unterminated_check(key, open_line)?;
            items.push(self.value(key, Mode::ListValue)?);
            self.skip_newlines()?;
            let t = self.next(Mode::ListValue)?;
            match t.tok {
                Tok::Comma => continue,
                Tok::RBracket => break,
                _ => {
                    self.peeked = Some(t);
                    self.unterminated_check(key, open_line)?;
                    let t = self.peeked.take().expect("put back");
                    return Err(self.syntax(
                        t.line,
                        format!(
                            "`{key}`: expected `,` or `]` after a list item, got {}",
                            t.tok.describe()
                        ),
                    ));
                }
            }
        }
        Ok(Value {
            line: open_line,
            kind: ValueKind::List(items),
        })
    }

    /// Reports a list that runs into the end of the file, or into what
    /// looks like the next statement (a name on a later line), as an
    /// unterminated list at the line of its `[`.
    fn unterminated_check(&mut self, key: &str, open_line: u32) -> Result<(), XlCfgError> {
        let t = self.peek(Mode::ListValue)?;
        let runs_on = match &t.tok {
            Tok::Eof => Some("the end of the file".to_string()),
            Tok::Ident(w) if t.line > open_line => Some(format!("`{w}` at line {}", t.line)),
            _ => None,
        };
        match runs_on {
            Some(found) => Err(XlCfgError::UnterminatedList {
                file: self.file.to_string(),
                line: open_line,
                key: key.to_string(),
                found,
            }),
            None => Ok(()),
        }
    }
}

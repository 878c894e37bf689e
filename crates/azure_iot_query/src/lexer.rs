//! Tokenizer: query text → [`Token`]s, each tagged with its byte offset.
//!
//! Keywords are not special here: `SELECT`, `and`, `true` … are all [`TokenKind::Ident`]; the parser
//! compares identifiers case-insensitively. This keeps keywords usable as property names after a dot
//! (`tags.group`).
//!
//! A name that is not an identifier is written in double brackets after a dot, as the hub's
//! configuration metrics do (`configurations.[[my-config]].status`): `[[…]]` there is one
//! [`TokenKind::Ident`] holding the text between the brackets, taken literally. Elsewhere `[[`
//! stays two brackets (a nested array literal).

use crate::error::{QueryError, excerpt};

/// The kinds of token in the query language.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// Identifier or keyword; may start with `$` (`$version`).
    Ident(String),
    /// String literal with escapes already resolved.
    Str(String),
    /// Decimal or hexadecimal number literal.
    Num(f64),
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    /// `!=` or `<>`.
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// End of input; always the last token.
    Eof,
}

impl TokenKind {
    /// Short description for error messages ("`,`", "string literal", "end of input").
    pub(crate) fn describe(&self) -> String {
        let punct = match self {
            Self::Ident(name) => return format!("`{}`", excerpt(name)),
            Self::Str(_) => return "string literal".to_owned(),
            Self::Num(_) => return "number".to_owned(),
            Self::Eof => return "end of input".to_owned(),
            Self::Comma => ",",
            Self::Dot => ".",
            Self::LParen => "(",
            Self::RParen => ")",
            Self::LBracket => "[",
            Self::RBracket => "]",
            Self::Star => "*",
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Slash => "/",
            Self::Percent => "%",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        };
        format!("`{punct}`")
    }
}

/// A token and the byte offset of its first character.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) offset: usize,
}

/// Splits `text` into tokens. The result always ends with a [`TokenKind::Eof`] token.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut tokens: Vec<Token> = Vec::new();
    loop {
        let after_dot = tokens.last().is_some_and(|t| t.kind == TokenKind::Dot);
        let token = match lexer.bracketed_name(after_dot)? {
            Some(token) => token,
            None => lexer.next_token()?,
        };
        let done = token.kind == TokenKind::Eof;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

struct Lexer<'t> {
    text: &'t str,
    /// Byte offset of the next character; always on a char boundary.
    pos: usize,
}

impl Lexer<'_> {
    fn peek_nth(&self, n: usize) -> Option<char> {
        self.text[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_nth(0)?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, expected: char) -> bool {
        let hit = self.peek_nth(0) == Some(expected);
        if hit {
            self.pos += expected.len_utf8();
        }
        hit
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_nth(0).is_some_and(&pred) {
            self.bump();
        }
    }

    /// A `[[name]]` property name right after a dot (see the module header); `None` when the
    /// next characters are anything else. The name must be non-empty and closed.
    fn bracketed_name(&mut self, after_dot: bool) -> Result<Option<Token>, QueryError> {
        if !after_dot {
            return Ok(None);
        }
        self.eat_while(char::is_whitespace);
        let offset = self.pos;
        let Some(rest) = self.text[offset..].strip_prefix("[[") else {
            return Ok(None);
        };
        match rest.find("]]") {
            Some(end) if end > 0 => {
                self.pos = offset + 2 + end + 2;
                Ok(Some(Token {
                    kind: TokenKind::Ident(rest[..end].to_owned()),
                    offset,
                }))
            }
            _ => Err(QueryError::new(
                offset,
                "a `[[` property name needs a name and a closing `]]`",
            )),
        }
    }

    fn next_token(&mut self) -> Result<Token, QueryError> {
        self.eat_while(char::is_whitespace);
        let offset = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Token {
                kind: TokenKind::Eof,
                offset,
            });
        };
        let kind = match c {
            ',' => TokenKind::Comma,
            '.' => TokenKind::Dot,
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            '*' => TokenKind::Star,
            '+' => TokenKind::Plus,
            '-' => TokenKind::Minus,
            '/' => TokenKind::Slash,
            '%' => TokenKind::Percent,
            '=' => TokenKind::Eq,
            '!' if self.eat('=') => TokenKind::Ne,
            '<' if self.eat('=') => TokenKind::Le,
            '<' if self.eat('>') => TokenKind::Ne,
            '<' => TokenKind::Lt,
            '>' if self.eat('=') => TokenKind::Ge,
            '>' => TokenKind::Gt,
            '\'' | '"' => TokenKind::Str(self.string(c, offset)?),
            '0'..='9' => TokenKind::Num(self.number(c, offset)?),
            c if is_ident_start(c) => {
                self.eat_while(is_ident_continue);
                TokenKind::Ident(self.text[offset..self.pos].to_owned())
            }
            other => {
                let shown = other.escape_debug();
                return Err(QueryError::new(
                    offset,
                    format!("unexpected character `{shown}`"),
                ));
            }
        };
        Ok(Token { kind, offset })
    }

    /// Lexes the rest of a number whose first digit `first` has been consumed.
    fn number(&mut self, first: char, start: usize) -> Result<f64, QueryError> {
        let value = if first == '0' && matches!(self.peek_nth(0), Some('x' | 'X')) {
            self.bump();
            let digits = self.pos;
            self.eat_while(|c| c.is_ascii_hexdigit());
            if digits == self.pos {
                return Err(QueryError::new(start, "invalid hexadecimal number"));
            }
            u64::from_str_radix(&self.text[digits..self.pos], 16)
                .ok()
                .map(|n| n as f64)
        } else {
            self.eat_while(|c| c.is_ascii_digit());
            if self.peek_nth(0) == Some('.') && self.peek_nth(1).is_some_and(|c| c.is_ascii_digit())
            {
                self.bump();
                self.eat_while(|c| c.is_ascii_digit());
            }
            let exponent = match (self.peek_nth(0), self.peek_nth(1), self.peek_nth(2)) {
                (Some('e' | 'E'), Some('+' | '-'), Some(d)) | (Some('e' | 'E'), Some(d), _) => {
                    d.is_ascii_digit()
                }
                _ => false,
            };
            if exponent {
                self.bump();
                if !self.eat('+') {
                    self.eat('-');
                }
                self.eat_while(|c| c.is_ascii_digit());
            }
            self.text[start..self.pos].parse::<f64>().ok()
        };
        if self.peek_nth(0).is_some_and(is_ident_continue) {
            return Err(QueryError::new(start, "invalid number"));
        }
        value
            .filter(|v| v.is_finite())
            .ok_or_else(|| QueryError::new(start, "number out of range"))
    }

    /// Lexes the rest of a string literal whose opening `quote` has been consumed.
    fn string(&mut self, quote: char, start: usize) -> Result<String, QueryError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            match self.bump() {
                None => return Err(QueryError::new(start, "unterminated string literal")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => out.push(self.escape(at)?),
                Some(c) => out.push(c),
            }
        }
    }

    /// Lexes one escape sequence; the backslash (at byte `at`) has been consumed.
    fn escape(&mut self, at: usize) -> Result<char, QueryError> {
        let invalid = || QueryError::new(at, "invalid escape sequence");
        let c = match self.bump().ok_or_else(invalid)? {
            c @ ('\'' | '"' | '\\' | '/') => c,
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = self.hex4().ok_or_else(invalid)?;
                if (0xD800..0xDC00).contains(&unit) {
                    // A high surrogate must be followed by `\uDC00`..`\uDFFF`.
                    if !(self.eat('\\') && self.eat('u')) {
                        return Err(invalid());
                    }
                    let low = self.hex4().filter(|l| (0xDC00..0xE000).contains(l));
                    let low = low.ok_or_else(invalid)?;
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    char::from_u32(code).ok_or_else(invalid)?
                } else {
                    char::from_u32(unit).ok_or_else(invalid)?
                }
            }
            _ => return Err(invalid()),
        };
        Ok(c)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders the tokens of `text` (without `Eof`), or the error.
    fn show(text: &str) -> String {
        let tokens = match tokenize(text) {
            Ok(tokens) => tokens,
            Err(err) => return err.to_string(),
        };
        let shown = tokens.iter().map(|t| match &t.kind {
            TokenKind::Ident(name) => format!("{name}@{}", t.offset),
            TokenKind::Str(s) => format!("{s:?}"),
            TokenKind::Num(n) => n.to_string(),
            TokenKind::Eof => String::new(),
            punct => punct.describe().trim_matches('`').to_owned(),
        });
        shown.collect::<Vec<_>>().join(" ").trim_end().to_owned()
    }

    #[test]
    fn punctuation_and_operators() {
        let all = "= != <> < <= > >= + - * / % , . ( ) [ ]";
        assert_eq!(show(all), all.replace("<>", "!="));
        assert_eq!(show("a<=b"), "a@0 <= b@3");
    }

    #[test]
    fn identifiers_keep_spelling_and_offsets() {
        assert_eq!(
            show("SELECT properties.desired.$version"),
            "SELECT@0 properties@7 . desired@18 . $version@26"
        );
        assert_eq!(show("  été_1"), "été_1@2");
    }

    #[test]
    fn numbers() {
        assert_eq!(
            show("42 1.5 0x1F 0XfF 2e3 1E-2 7e+1"),
            "42 1.5 31 255 2000 0.01 70"
        );
        assert_eq!(
            show("1."),
            "1 .",
            "a dot needs a digit after it to be a decimal point"
        );
        assert_eq!(show("x = 12abc"), "invalid number at offset 4");
        assert_eq!(show("0x"), "invalid hexadecimal number at offset 0");
        assert_eq!(show("1e999"), "number out of range at offset 0");
        assert_eq!(
            show("0x1ffffffffffffffff"),
            "number out of range at offset 0"
        );
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(show(r#"'a' "b" "it's""#), r#""a" "b" "it's""#);
        assert_eq!(
            show(r#"'\'\"\\\/\u00e9\ud83d\ude00\n'"#),
            r#""'\"\\/é😀\n""#
        );
        assert_eq!(show("x = 'abc"), "unterminated string literal at offset 4");
        assert_eq!(show(r"'a\q'"), "invalid escape sequence at offset 2");
        assert_eq!(show(r"'\u12'"), "invalid escape sequence at offset 1");
        assert_eq!(show(r"'\ud83d'"), "invalid escape sequence at offset 1");
        assert_eq!(show(r"'\udc00'"), "invalid escape sequence at offset 1");
        assert_eq!(show("'\\"), "invalid escape sequence at offset 1");
    }

    #[test]
    fn bracketed_names_after_a_dot() {
        assert_eq!(
            show("configurations.[[my-config]].status"),
            "configurations@0 . my-config@15 . status@29"
        );
        assert_eq!(show("a. [[x y]]"), "a@0 . x y@3");
        assert_eq!(show("x IN [['a']]"), "x@0 IN@2 [ [ \"a\" ] ]");
        assert_eq!(
            show("a.[[]]"),
            "a `[[` property name needs a name and a closing `]]` at offset 2"
        );
        assert_eq!(
            show("a.[[b"),
            "a `[[` property name needs a name and a closing `]]` at offset 2"
        );
    }

    #[test]
    fn unexpected_characters() {
        assert_eq!(show("a ! b"), "unexpected character `!` at offset 2");
        assert_eq!(show("a\u{0}"), "unexpected character `\\0` at offset 1");
        assert_eq!(show("é#"), "unexpected character `#` at offset 2");
    }
}

//! Splits RQL text into tokens with byte offsets, decoding every literal (numbers, strings,
//! dates, object ids, UUIDs, decimals, base64) so the parser only deals with finished values.

use crate::quote::Quoted;
use crate::value::{Decimal, ObjectId, Uuid};

use super::literal;
use super::QueryError;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// An identifier or keyword; its text is the source slice.
    Word,
    /// `@name`; its text (without the `@`) is the source slice minus one byte.
    AtWord,
    /// An integer literal.
    Int(i64),
    /// A floating-point literal (has a `.` or an exponent).
    Double(f64),
    /// A quoted string, unescaped.
    Str(String),
    /// `$N`.
    Arg(usize),
    /// A date, in milliseconds since the epoch.
    Date(i64),
    /// `oid(...)`.
    ObjectId(ObjectId),
    /// `uuid(...)`.
    Uuid(Uuid),
    /// `decimal128(...)`.
    Decimal(Decimal),
    /// `B64"..."`.
    Binary(Vec<u8>),
    /// Punctuation and symbolic operators.
    Punct(Punct),
}

/// Punctuation and symbolic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Punct {
    /// `==`.
    EqEq,
    /// `=`.
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `&&`.
    AndAnd,
    /// `||`.
    OrOr,
    /// `!`.
    Bang,
    /// `-` not followed by a digit (only valid before `inf`).
    Minus,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `{`.
    LBrace,
    /// `}`.
    RBrace,
    /// `[`.
    LBracket,
    /// `]`.
    RBracket,
    /// `,`.
    Comma,
    /// `.`.
    Dot,
}

/// A token and the byte range of its text.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    /// What it is.
    pub(crate) kind: TokenKind,
    /// Offset of its first byte.
    pub(crate) start: usize,
    /// Offset just past its last byte.
    pub(crate) end: usize,
}

/// Splits `text` into tokens.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut tokens = Vec::new();
    while let Some(token) = lexer.next_token()? {
        tokens.push(token);
    }
    Ok(tokens)
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn quote(text: &str) -> String {
    Quoted(text).to_string()
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.text.get(start..end).unwrap_or("")
    }

    fn error(&self, position: usize, expected: impl Into<String>, found: String) -> QueryError {
        QueryError {
            position,
            expected: expected.into(),
            found,
        }
    }

    fn next_token(&mut self) -> Result<Option<Token>, QueryError> {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let kind = if c.is_ascii_digit()
            || (c == '-' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit()))
        {
            self.number_or_date()?
        } else if c == '\'' || c == '"' {
            TokenKind::Str(self.string()?)
        } else if c == '$' {
            self.argument()?
        } else if c == '@' {
            self.pos += 1;
            let word = self.word();
            if word.is_empty() {
                return Err(self.error(
                    start,
                    "a name such as \"@count\" after \"@\"",
                    self.found_here(),
                ));
            }
            TokenKind::AtWord
        } else if c == 'T' && self.timestamp_ahead() {
            self.timestamp()?
        } else if is_word_start(c) {
            self.word_or_literal()?
        } else {
            TokenKind::Punct(self.punct()?)
        };
        Ok(Some(Token {
            kind,
            start,
            end: self.pos,
        }))
    }

    /// What the lexer is looking at, for "found" in errors.
    fn found_here(&self) -> String {
        match self.peek() {
            Some(c) => quote(&c.to_string()),
            None => "end of query".to_owned(),
        }
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_word_char(c) {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        self.slice(start, self.pos)
    }

    fn digits(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    fn punct(&mut self) -> Result<Punct, QueryError> {
        let rest = self.rest();
        let two = [
            ("==", Punct::EqEq),
            ("!=", Punct::Ne),
            ("<=", Punct::Le),
            (">=", Punct::Ge),
            ("&&", Punct::AndAnd),
            ("||", Punct::OrOr),
        ];
        if let Some((text, punct)) = two.iter().find(|(text, _)| rest.starts_with(text)) {
            self.pos += text.len();
            return Ok(*punct);
        }
        let punct = match rest.chars().next() {
            Some('=') => Punct::Eq,
            Some('<') => Punct::Lt,
            Some('>') => Punct::Gt,
            Some('!') => Punct::Bang,
            Some('-') => Punct::Minus,
            Some('(') => Punct::LParen,
            Some(')') => Punct::RParen,
            Some('{') => Punct::LBrace,
            Some('}') => Punct::RBrace,
            Some('[') => Punct::LBracket,
            Some(']') => Punct::RBracket,
            Some(',') => Punct::Comma,
            Some('.') => Punct::Dot,
            _ => {
                return Err(self.error(
                    self.pos,
                    "a key path, a value, an operator or a parenthesis",
                    self.found_here(),
                ))
            }
        };
        self.pos += 1;
        Ok(punct)
    }

    fn argument(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let digits = self.digits();
        if digits.is_empty() {
            return Err(self.error(
                start,
                "an argument number such as \"$0\"",
                quote(self.slice(start, self.pos)),
            ));
        }
        digits.parse().map(TokenKind::Arg).map_err(|_| {
            self.error(
                start,
                "an argument number that fits in memory",
                quote(self.slice(start, self.pos)),
            )
        })
    }

    fn number_or_date(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        if let Some(date) = self.civil_date()? {
            return Ok(TokenKind::Date(date));
        }
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        self.digits();
        let mut is_double = false;
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            is_double = true;
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek_at(1), Some('+' | '-')));
            if self.peek_at(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                is_double = true;
                self.pos += 1 + sign;
                self.digits();
            }
        }
        let text = self.slice(start, self.pos);
        if is_double {
            crate::value::read_double(text)
                .map(TokenKind::Double)
                .ok_or_else(|| self.error(start, "a floating-point number", quote(text)))
        } else {
            text.parse().map(TokenKind::Int).map_err(|_| {
                self.error(
                    start,
                    "an integer between -9223372036854775808 and 9223372036854775807",
                    quote(text),
                )
            })
        }
    }

    /// Reads `YYYY-MM-DD@HH:MM:SS[:NANOS]` (or with `T` for `@`) if that is what follows.
    fn civil_date(&mut self) -> Result<Option<i64>, QueryError> {
        let rest = self.rest().as_bytes();
        let digit = |i: usize| rest.get(i).is_some_and(u8::is_ascii_digit);
        let at = |i: usize, b: u8| rest.get(i) == Some(&b);
        let shape = (0..4).all(digit)
            && at(4, b'-')
            && (5..7).all(digit)
            && at(7, b'-')
            && (8..10).all(digit)
            && (at(10, b'@') || at(10, b'T'))
            && (11..13).all(digit)
            && at(13, b':')
            && (14..16).all(digit)
            && at(16, b':')
            && (17..19).all(digit);
        if !shape {
            return Ok(None);
        }
        let start = self.pos;
        let field = |from: usize, to: usize| -> i64 {
            rest.get(from..to)
                .unwrap_or_default()
                .iter()
                .fold(0, |acc, b| acc * 10 + i64::from(b - b'0'))
        };
        let parts = [
            field(0, 4),
            field(5, 7),
            field(8, 10),
            field(11, 13),
            field(14, 16),
            field(17, 19),
        ];
        self.pos += 19;
        let mut nanos = 0;
        if self.peek() == Some(':') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            let digits = self.digits();
            nanos = match digits.parse::<i64>() {
                Ok(n) if n < 1_000_000_000 => n,
                _ => {
                    return Err(self.error(
                        start,
                        "nanoseconds below 1000000000 in the date",
                        quote(self.slice(start, self.pos)),
                    ))
                }
            };
        }
        match literal::date_from_civil(parts, nanos) {
            Some(ms) => Ok(Some(ms)),
            None => Err(self.error(
                start,
                "a valid date and time (YYYY-MM-DD@HH:MM:SS)",
                quote(self.slice(start, self.pos)),
            )),
        }
    }

    /// Whether `T<seconds>:<nanos>` follows.
    fn timestamp_ahead(&self) -> bool {
        let rest = self.rest().as_bytes();
        let mut i = 1;
        let signed_digits = |i: &mut usize| {
            if rest.get(*i) == Some(&b'-') {
                *i += 1;
            }
            let from = *i;
            while rest.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        if !signed_digits(&mut i) || rest.get(i) != Some(&b':') {
            return false;
        }
        i += 1;
        signed_digits(&mut i)
    }

    fn timestamp(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let seconds_start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        self.digits();
        let seconds = self.slice(seconds_start, self.pos).parse::<i64>();
        self.pos += 1;
        let nanos_start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        self.digits();
        let nanos = self.slice(nanos_start, self.pos).parse::<i64>();
        match (seconds, nanos) {
            (Ok(seconds), Ok(nanos)) => literal::date_from_timestamp(seconds, nanos),
            _ => None,
        }
        .map(TokenKind::Date)
        .ok_or_else(|| {
            self.error(
                start,
                "a date T<seconds>:<nanoseconds> with nanoseconds below 1000000000",
                quote(self.slice(start, self.pos)),
            )
        })
    }

    fn word_or_literal(&mut self) -> Result<TokenKind, QueryError> {
        let start = self.pos;
        let word = self.word();
        let next = self.peek();
        if next == Some('(') {
            let constructor = ["oid", "uuid", "decimal128"]
                .into_iter()
                .find(|name| word.eq_ignore_ascii_case(name));
            if let Some(constructor) = constructor {
                return self.constructed(start, constructor);
            }
        }
        if matches!(next, Some('"' | '\'')) && word.eq_ignore_ascii_case("B64") {
            let text = self.string()?;
            return literal::base64_decode(&text)
                .map(TokenKind::Binary)
                .ok_or_else(|| self.error(start, "base64 text in B64\"...\"", quote(&text)));
        }
        Ok(TokenKind::Word)
    }

    /// Reads the `(...)` of `oid(...)`, `uuid(...)` or `decimal128(...)`.
    fn constructed(&mut self, start: usize, constructor: &str) -> Result<TokenKind, QueryError> {
        self.pos += 1;
        let inner_start = self.pos;
        let Some(close) = self.rest().find(')') else {
            return Err(self.error(
                self.text.len(),
                format!("\")\" to close \"{constructor}(\""),
                "end of query".to_owned(),
            ));
        };
        let inner = self.slice(inner_start, inner_start + close).trim();
        self.pos = inner_start + close + 1;
        let kind = match constructor {
            "oid" => ObjectId::parse(inner).map(TokenKind::ObjectId),
            "uuid" => Uuid::parse(inner).map(TokenKind::Uuid),
            _ => Decimal::parse(inner).map(TokenKind::Decimal),
        };
        kind.map_err(|e| {
            self.error(
                start,
                format!("a valid {} inside \"{constructor}(...)\"", e.expected),
                quote(inner),
            )
        })
    }

    fn string(&mut self) -> Result<String, QueryError> {
        let start = self.pos;
        let quote_char = self.peek().unwrap_or('"');
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(
                    self.text.len(),
                    format!("a closing {quote_char} for the string at offset {start}"),
                    "end of query".to_owned(),
                ));
            };
            self.pos += c.len_utf8();
            if c == quote_char {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escape_start = self.pos - 1;
            let escaped = self.peek();
            self.pos += escaped.map_or(0, char::len_utf8);
            let decoded = match escaped {
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some('b') => '\u{8}',
                Some('f') => '\u{c}',
                Some('0') => '\0',
                Some(c @ ('\\' | '\'' | '"' | '/')) => c,
                Some('u') => self.unicode_escape(escape_start)?,
                _ => {
                    return Err(self.error(
                        escape_start,
                        "an escape such as \\n, \\\", \\\\ or \\u00e9",
                        quote(self.slice(escape_start, self.pos)),
                    ))
                }
            };
            out.push(decoded);
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let hex = self.rest().get(..4)?;
        let value = u32::from_str_radix(hex, 16).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        Some(value)
    }

    fn unicode_escape(&mut self, escape_start: usize) -> Result<char, QueryError> {
        let bad = |lexer: &Self| {
            let end = (lexer.pos + 4).min(lexer.text.len());
            let shown = lexer
                .text
                .get(escape_start..end)
                .unwrap_or_else(|| lexer.slice(escape_start, lexer.pos));
            lexer.error(
                escape_start,
                "four hex digits naming a character after \\u",
                quote(shown),
            )
        };
        let high = self.hex4().ok_or_else(|| bad(self))?;
        let code = if (0xd800..0xdc00).contains(&high) {
            if !self.rest().starts_with("\\u") {
                return Err(bad(self));
            }
            self.pos += 2;
            let low = self.hex4().ok_or_else(|| bad(self))?;
            if !(0xdc00..0xe000).contains(&low) {
                return Err(bad(self));
            }
            0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| bad(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn numbers_keep_their_kind() {
        assert_eq!(
            kinds("1 -2 1.5 -0.25 1e3 2E-2 1."),
            vec![
                TokenKind::Int(1),
                TokenKind::Int(-2),
                TokenKind::Double(1.5),
                TokenKind::Double(-0.25),
                TokenKind::Double(1000.0),
                TokenKind::Double(0.02),
                TokenKind::Int(1),
                TokenKind::Punct(Punct::Dot),
            ]
        );
        let err = tokenize("x == 99999999999999999999").unwrap_err();
        assert_eq!(err.position, 5);
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            kinds(r#"'it\'s' "a\"b\\c\n" '\u00e9\ud83d\ude00'"#),
            vec![
                TokenKind::Str("it's".into()),
                TokenKind::Str("a\"b\\c\n".into()),
                TokenKind::Str("é😀".into()),
            ]
        );
        let err = tokenize("name == 'abc").unwrap_err();
        assert_eq!(err.position, 12);
        assert_eq!(err.found, "end of query");
        let err = tokenize(r"name == 'a\qb'").unwrap_err();
        assert_eq!((err.position, err.found.as_str()), (10, r#""\\q""#));
        assert!(tokenize(r"'\ud83d'").is_err());
        assert!(tokenize(r"'\u12'").is_err());
    }

    #[test]
    fn dates_in_both_forms() {
        assert_eq!(
            kinds("T1:500000000 T-1:-500000000 1970-01-02@00:00:01 1970-01-01T00:00:00:7000000"),
            vec![
                TokenKind::Date(1_500),
                TokenKind::Date(-1_500),
                TokenKind::Date(86_401_000),
                TokenKind::Date(7),
            ]
        );
        assert!(tokenize("2023-02-30@00:00:00").is_err());
        assert!(tokenize("T1:1000000000").is_err());
        assert_eq!(kinds("T1"), vec![TokenKind::Word]);
    }

    #[test]
    fn constructed_literals() {
        let oid = ObjectId::parse("5f1b2c3d4e5f6a7b8c9d0e1f").unwrap();
        assert_eq!(
            kinds("oid(5f1b2c3d4e5f6a7b8c9d0e1f) B64\"aGk=\" decimal128(1.50)"),
            vec![
                TokenKind::ObjectId(oid),
                TokenKind::Binary(b"hi".to_vec()),
                TokenKind::Decimal(Decimal::parse("1.50").unwrap()),
            ]
        );
        let err = tokenize("_id == oid(xyz)").unwrap_err();
        assert_eq!(err.position, 7);
        assert_eq!(err.found, "\"xyz\"");
        assert!(tokenize("uuid(123").is_err());
        assert!(tokenize("B64'***'").is_err());
        assert_eq!(kinds("oid"), vec![TokenKind::Word]);
    }

    #[test]
    fn arguments_and_punctuation() {
        assert_eq!(
            kinds("$12 == = != <= >= < > && || ! ( ) { } [ ] , . @count"),
            vec![
                TokenKind::Arg(12),
                TokenKind::Punct(Punct::EqEq),
                TokenKind::Punct(Punct::Eq),
                TokenKind::Punct(Punct::Ne),
                TokenKind::Punct(Punct::Le),
                TokenKind::Punct(Punct::Ge),
                TokenKind::Punct(Punct::Lt),
                TokenKind::Punct(Punct::Gt),
                TokenKind::Punct(Punct::AndAnd),
                TokenKind::Punct(Punct::OrOr),
                TokenKind::Punct(Punct::Bang),
                TokenKind::Punct(Punct::LParen),
                TokenKind::Punct(Punct::RParen),
                TokenKind::Punct(Punct::LBrace),
                TokenKind::Punct(Punct::RBrace),
                TokenKind::Punct(Punct::LBracket),
                TokenKind::Punct(Punct::RBracket),
                TokenKind::Punct(Punct::Comma),
                TokenKind::Punct(Punct::Dot),
                TokenKind::AtWord,
            ]
        );
        assert_eq!(tokenize("a # b").unwrap_err().position, 2);
        assert_eq!(tokenize("$").unwrap_err().found, "\"$\"");
        assert!(tokenize("$99999999999999999999999").is_err());
        assert!(tokenize("@").is_err());
    }
}

//! Recursive-descent parser from RQL tokens to the query AST; keywords are resolved here, once,
//! so evaluation never looks at text.

use super::ast::{
    Arg, Clause, CompareOp, Comparison, KeyPath, Offset, Operand, Predicate, Quantifier, Step, Tail,
};
use super::lexer::{tokenize, Punct, Token, TokenKind};
use super::{Query, QueryError};
use crate::quote::Quoted;
use crate::value::Value;

/// How deeply parentheses and `NOT`s may nest; deeper input is refused rather than risking the
/// stack.
pub(crate) const MAX_DEPTH: usize = 100;

/// How many steps a key path may have.
pub(crate) const MAX_PATH_STEPS: usize = 64;

/// Parses a whole query.
pub(crate) fn parse_query(text: &str) -> Result<Query, QueryError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        depth: 0,
    };
    let predicate = parser.or_expr()?;
    let mut clauses = Vec::new();
    while let Some(clause) = parser.clause()? {
        clauses.push(clause);
    }
    if parser.peek().is_some() {
        let expected = if clauses.is_empty() {
            "\"AND\", \"OR\", SORT, DISTINCT, LIMIT or the end of the query"
        } else {
            "SORT, DISTINCT, LIMIT or the end of the query"
        };
        return Err(parser.error(expected));
    }
    Ok(Query { predicate, clauses })
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_kind(&self) -> Option<&TokenKind> {
        self.peek().map(|t| &t.kind)
    }

    fn peek_nth_kind(&self, n: usize) -> Option<&TokenKind> {
        self.tokens.get(self.pos + n).map(|t| &t.kind)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn token_text(&self, token: &Token) -> &str {
        self.text.get(token.start..token.end).unwrap_or("")
    }

    /// The offset of the next token (or the end of the text).
    fn offset(&self) -> usize {
        self.peek().map_or(self.text.len(), |t| t.start)
    }

    /// The end of the last consumed token.
    fn last_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(0, |t| t.end)
    }

    /// Source text from `start` to the end of the last consumed token, quoted.
    fn quoted_since(&self, start: usize) -> String {
        Quoted(self.text.get(start..self.last_end()).unwrap_or("")).to_string()
    }

    fn error(&self, expected: impl Into<String>) -> QueryError {
        let found = match self.peek() {
            Some(token) => Quoted(self.token_text(token)).to_string(),
            None => "end of query".to_owned(),
        };
        QueryError {
            position: self.offset(),
            expected: expected.into(),
            found,
        }
    }

    fn is_punct(&self, punct: Punct) -> bool {
        self.peek_kind() == Some(&TokenKind::Punct(punct))
    }

    fn eat_punct(&mut self, punct: Punct) -> bool {
        let found = self.is_punct(punct);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_punct(
        &mut self,
        punct: Punct,
        expected: impl Into<String>,
    ) -> Result<(), QueryError> {
        if self.eat_punct(punct) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    /// Whether the next token is the word `keyword` (case-insensitive).
    fn is_keyword(&self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| {
            t.kind == TokenKind::Word && self.token_text(t).eq_ignore_ascii_case(keyword)
        })
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = self.is_keyword(keyword);
        if found {
            self.pos += 1;
        }
        found
    }

    fn enter(&mut self) -> Result<(), QueryError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("at most {MAX_DEPTH} nested parentheses and NOTs")));
        }
        self.depth += 1;
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Predicate, QueryError> {
        let mut items = vec![self.and_expr()?];
        while self.eat_keyword("OR") || self.eat_punct(Punct::OrOr) {
            items.push(self.and_expr()?);
        }
        Ok(single_or(items, Predicate::Or))
    }

    fn and_expr(&mut self) -> Result<Predicate, QueryError> {
        let mut items = vec![self.not_expr()?];
        while self.eat_keyword("AND") || self.eat_punct(Punct::AndAnd) {
            items.push(self.not_expr()?);
        }
        Ok(single_or(items, Predicate::And))
    }

    fn not_expr(&mut self) -> Result<Predicate, QueryError> {
        if self.is_keyword("NOT") || self.is_punct(Punct::Bang) {
            self.enter()?;
            self.pos += 1;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Predicate::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Predicate, QueryError> {
        if self.is_punct(Punct::LParen) {
            self.enter()?;
            let open = self.offset();
            self.pos += 1;
            let inner = self.or_expr()?;
            self.expect_punct(
                Punct::RParen,
                format!("\")\" to close the \"(\" at offset {open}"),
            )?;
            self.depth -= 1;
            return Ok(inner);
        }
        if self.eat_keyword("TRUEPREDICATE") {
            return Ok(Predicate::True);
        }
        if self.eat_keyword("FALSEPREDICATE") {
            return Ok(Predicate::False);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Predicate, QueryError> {
        let start = self.offset();
        let Some(lhs) = self.operand()? else {
            return Err(self.error("a predicate: a comparison, \"(\", NOT or TRUEPREDICATE"));
        };
        let after_lhs = self.quoted_since(start);
        let op_start = self.offset();
        let Some(op) = self.operator() else {
            return Err(self.error(format!(
                "a comparison operator such as \"==\" after {after_lhs}"
            )));
        };
        let op_text = self.quoted_since(op_start);
        let mut case_insensitive = false;
        if self.is_punct(Punct::LBracket) {
            if !op.takes_case_flag() {
                return Err(self.error(format!(
                    "a value after {op_text} (\"[c]\" only follows ==, !=, BEGINSWITH, ENDSWITH, CONTAINS and LIKE)"
                )));
            }
            self.pos += 1;
            if !self.eat_keyword("c") {
                return Err(self.error("\"c\" in the case-insensitivity flag \"[c]\""));
            }
            self.expect_punct(Punct::RBracket, "\"]\" to close \"[c\"")?;
            case_insensitive = true;
        }
        let rhs = match op {
            CompareOp::Between => {
                if !self.is_punct(Punct::LBrace) {
                    return Err(self.error("two values {low, high} after \"BETWEEN\""));
                }
                let list_start = self.offset();
                let items = self.list()?;
                if items.len() != 2 {
                    return Err(QueryError {
                        position: list_start,
                        expected: "exactly two values {low, high} after \"BETWEEN\"".to_owned(),
                        found: self.quoted_since(list_start),
                    });
                }
                Operand::List(items)
            }
            CompareOp::In if self.is_punct(Punct::LBrace) => Operand::List(self.list()?),
            CompareOp::In => {
                let rhs_start = self.offset();
                let rhs_token = self.pos;
                match self.operand()? {
                    Some(operand @ (Operand::Path(_) | Operand::Arg(_))) => operand,
                    _ => {
                        let expected = "a list {...}, an argument or a key path after \"IN\"";
                        if self.pos == rhs_token {
                            return Err(self.error(expected));
                        }
                        return Err(QueryError {
                            position: rhs_start,
                            expected: expected.to_owned(),
                            found: self.quoted_since(rhs_start),
                        });
                    }
                }
            }
            _ => match self.operand()? {
                Some(operand) => operand,
                None => return Err(self.error(format!("a value after {op_text}"))),
            },
        };
        Ok(Predicate::Compare(Box::new(Comparison {
            lhs,
            op,
            case_insensitive,
            rhs,
            offset: Offset(start),
        })))
    }

    fn operator(&mut self) -> Option<CompareOp> {
        let op = match self.peek_kind()? {
            TokenKind::Punct(Punct::EqEq | Punct::Eq) => CompareOp::Eq,
            TokenKind::Punct(Punct::Ne) => CompareOp::Ne,
            TokenKind::Punct(Punct::Lt) => CompareOp::Lt,
            TokenKind::Punct(Punct::Le) => CompareOp::Le,
            TokenKind::Punct(Punct::Gt) => CompareOp::Gt,
            TokenKind::Punct(Punct::Ge) => CompareOp::Ge,
            TokenKind::Word => {
                let words = [
                    ("BEGINSWITH", CompareOp::BeginsWith),
                    ("ENDSWITH", CompareOp::EndsWith),
                    ("CONTAINS", CompareOp::Contains),
                    ("LIKE", CompareOp::Like),
                    ("IN", CompareOp::In),
                    ("BETWEEN", CompareOp::Between),
                ];
                words
                    .into_iter()
                    .find(|(word, _)| self.is_keyword(word))
                    .map(|(_, op)| op)?
            }
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }

    /// `{item, item, ...}` where items are literals or arguments.
    fn list(&mut self) -> Result<Vec<Operand>, QueryError> {
        let open = self.offset();
        self.expect_punct(Punct::LBrace, "\"{\"")?;
        let mut items = Vec::new();
        if self.eat_punct(Punct::RBrace) {
            return Ok(items);
        }
        loop {
            let item_start = self.offset();
            let item_token = self.pos;
            match self.operand()? {
                Some(item @ (Operand::Literal(_) | Operand::Arg(_))) => items.push(item),
                _ => {
                    let expected = "a literal value or an argument in the list";
                    if self.pos == item_token {
                        return Err(self.error(expected));
                    }
                    return Err(QueryError {
                        position: item_start,
                        expected: expected.to_owned(),
                        found: self.quoted_since(item_start),
                    });
                }
            }
            if self.eat_punct(Punct::RBrace) {
                return Ok(items);
            }
            self.expect_punct(
                Punct::Comma,
                format!("\",\" or \"}}\" to close the list at offset {open}"),
            )?;
        }
    }

    /// A key path, literal or argument; `None` (consuming nothing) if none starts here.
    fn operand(&mut self) -> Result<Option<Operand>, QueryError> {
        let Some(token) = self.peek().cloned() else {
            return Ok(None);
        };
        let literal = match token.kind {
            TokenKind::Int(i) => Value::Int(i),
            TokenKind::Double(d) => Value::Double(d),
            TokenKind::Str(s) => Value::String(s),
            TokenKind::Date(ms) => Value::Date(ms),
            TokenKind::ObjectId(oid) => Value::ObjectId(oid),
            TokenKind::Uuid(uuid) => Value::Uuid(uuid),
            TokenKind::Decimal(d) => Value::Decimal(d),
            TokenKind::Binary(bytes) => Value::Binary(bytes),
            TokenKind::Arg(index) => {
                self.pos += 1;
                return Ok(Some(Operand::Arg(Arg {
                    index,
                    offset: Offset(token.start),
                })));
            }
            TokenKind::Punct(Punct::Minus) => {
                let infinite = matches!(self.peek_nth_kind(1), Some(TokenKind::Word))
                    && self.tokens.get(self.pos + 1).is_some_and(|t| {
                        let word = self.token_text(t);
                        word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity")
                    });
                if !infinite {
                    return Ok(None);
                }
                self.pos += 1;
                Value::Double(f64::NEG_INFINITY)
            }
            TokenKind::Word => {
                let word = self.token_text(&token);
                let keyword = |k: &str| word.eq_ignore_ascii_case(k);
                if keyword("true") {
                    Value::Bool(true)
                } else if keyword("false") {
                    Value::Bool(false)
                } else if keyword("null") || keyword("nil") {
                    Value::Null
                } else if keyword("inf") || keyword("infinity") {
                    Value::Double(f64::INFINITY)
                } else if keyword("nan") {
                    Value::Double(f64::NAN)
                } else {
                    let quantifier = if keyword("ANY") || keyword("SOME") {
                        Some(Quantifier::Any)
                    } else if keyword("ALL") {
                        Some(Quantifier::All)
                    } else if keyword("NONE") {
                        Some(Quantifier::None)
                    } else {
                        None
                    };
                    if quantifier.is_some() {
                        let quantifier_text = Quoted(word).to_string();
                        self.pos += 1;
                        if self.peek_kind() != Some(&TokenKind::Word) {
                            return Err(self.error(format!("a key path after {quantifier_text}")));
                        }
                    }
                    return self
                        .key_path(quantifier, token.start)
                        .map(|p| Some(Operand::Path(p)));
                }
            }
            TokenKind::AtWord | TokenKind::Punct(_) => return Ok(None),
        };
        self.pos += 1;
        Ok(Some(Operand::Literal(literal)))
    }

    /// A key path starting at the next token, which is a word.
    fn key_path(
        &mut self,
        quantifier: Option<Quantifier>,
        start: usize,
    ) -> Result<KeyPath, QueryError> {
        let mut steps = Vec::new();
        let mut tail = None;
        if let Some(first) = self.advance() {
            steps.push(Step::Property(self.token_text(&first).to_owned()));
        }
        loop {
            if self.is_punct(Punct::Dot) {
                self.pos += 1;
                match self.peek().cloned() {
                    Some(token) if token.kind == TokenKind::Word => {
                        self.pos += 1;
                        steps.push(Step::Property(self.token_text(&token).to_owned()));
                    }
                    Some(token) if token.kind == TokenKind::AtWord => {
                        let name = self.text.get(token.start + 1..token.end).unwrap_or("");
                        let Some(found) = Tail::from_name(name) else {
                            return Err(self
                                .error("@count, @size, @keys, @values, @min, @max, @sum or @avg"));
                        };
                        self.pos += 1;
                        tail = Some(found);
                        break;
                    }
                    _ => return Err(self.error("a property name or an @operation after \".\"")),
                }
            } else if self.is_punct(Punct::LBracket) {
                self.pos += 1;
                let key = match self.peek_kind() {
                    Some(TokenKind::Str(key)) => key.clone(),
                    _ => return Err(self.error("a quoted dictionary key after \"[\"")),
                };
                self.pos += 1;
                self.expect_punct(Punct::RBracket, "\"]\" after the dictionary key")?;
                steps.push(Step::Key(key));
            } else {
                break;
            }
            if steps.len() > MAX_PATH_STEPS {
                return Err(QueryError {
                    position: start,
                    expected: format!("a key path of at most {MAX_PATH_STEPS} steps"),
                    found: "a longer one".to_owned(),
                });
            }
        }
        Ok(KeyPath {
            quantifier,
            steps,
            tail,
            offset: Offset(start),
        })
    }

    /// A `SORT(...)`, `DISTINCT(...)` or `LIMIT(...)` clause, if one follows.
    fn clause(&mut self) -> Result<Option<Clause>, QueryError> {
        if self.peek_nth_kind(1) != Some(&TokenKind::Punct(Punct::LParen)) {
            return Ok(None);
        }
        if self.eat_keyword("SORT") {
            self.pos += 1;
            let mut keys = Vec::new();
            loop {
                let path = self.clause_path("SORT")?;
                let ascending = if self.eat_keyword("ASC") || self.eat_keyword("ASCENDING") {
                    true
                } else {
                    !(self.eat_keyword("DESC") || self.eat_keyword("DESCENDING"))
                };
                keys.push((path, ascending));
                if !self.eat_punct(Punct::Comma) {
                    break;
                }
            }
            self.expect_punct(Punct::RParen, "ASC, DESC, \",\" or \")\" in SORT(...)")?;
            return Ok(Some(Clause::Sort(keys)));
        }
        if self.eat_keyword("DISTINCT") {
            self.pos += 1;
            let mut paths = vec![self.clause_path("DISTINCT")?];
            while self.eat_punct(Punct::Comma) {
                paths.push(self.clause_path("DISTINCT")?);
            }
            self.expect_punct(Punct::RParen, "\",\" or \")\" in DISTINCT(...)")?;
            return Ok(Some(Clause::Distinct(paths)));
        }
        if self.eat_keyword("LIMIT") {
            self.pos += 1;
            let limit = match self.peek_kind() {
                Some(TokenKind::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            };
            let Some(limit) = limit else {
                return Err(self.error("a whole number of at least 0 in LIMIT(...)"));
            };
            self.pos += 1;
            self.expect_punct(Punct::RParen, "\")\" to close LIMIT(...)")?;
            return Ok(Some(Clause::Limit(limit)));
        }
        Ok(None)
    }

    fn clause_path(&mut self, clause: &str) -> Result<KeyPath, QueryError> {
        if self.peek_kind() != Some(&TokenKind::Word) {
            return Err(self.error(format!("a key path in {clause}(...)")));
        }
        let start = self.offset();
        self.key_path(None, start)
    }
}

/// The only item of a one-item list, or the list wrapped by `wrap`.
fn single_or(mut items: Vec<Predicate>, wrap: fn(Vec<Predicate>) -> Predicate) -> Predicate {
    if items.len() == 1 {
        if let Some(only) = items.pop() {
            return only;
        }
    }
    wrap(items)
}

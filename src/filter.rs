//! Route filters: a small expression language over record fields (routes use it, and the
//! configuration's validation parses it).
//!
//! ```text
//! authorizationResponseStatus != "Approved"
//! authorizedAmount >= 500 and cardType in ["Visa", "Mastercard"]
//! not (posEntryMode1 == "01") or exists uar.entity.taxId
//! ```
//! Operators: `==` `!=` `<` `<=` `>` `>=`, `in [..]`, `not in [..]`, `exists PATH`, `and`, `or`,
//! `not`, parentheses. Values: "strings", numbers, true, false, null. Paths are dotted.
//! A missing field makes `==`, `in` and comparisons false, and `!=`, `not in` true
//! (a record without a status is "not Approved").
//! At most 64 levels of parentheses and `not`, and 1000 `and`/`or`: deeper filters would
//! overflow the stack when parsed or evaluated.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// Deepest nesting of parentheses and `not`: parsing recurses on each level.
const MAX_NESTING: usize = 64;
/// Most `and`/`or` in one filter: each is a level of the tree that evaluation recurses into.
const MAX_AND_OR: usize = 1000;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare(Path, Op, Value),
    In(Path, Vec<Value>),
    NotIn(Path, Vec<Value>),
    Exists(Path),
    Not(Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Why a filter does not parse, and where (1-based column).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            end: text.chars().count() + 1,
            nesting: 0,
            and_or: 0,
        };
        let filter = parser.or()?;
        match parser.peek() {
            None => Ok(filter),
            Some((col, t)) => Err(FilterError {
                column: col,
                message: format!("unexpected {t} after a complete expression"),
            }),
        }
    }

    pub fn matches(&self, record: &Value) -> bool {
        match self {
            Filter::Compare(path, op, value) => match path.get(record) {
                None => *op == Op::Ne,
                Some(field) => {
                    let ord = compare(field, value);
                    match op {
                        Op::Eq => ord == Some(Ordering::Equal),
                        Op::Ne => ord != Some(Ordering::Equal),
                        Op::Lt => ord == Some(Ordering::Less),
                        Op::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                        Op::Gt => ord == Some(Ordering::Greater),
                        Op::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
                    }
                }
            },
            Filter::In(path, values) => path.get(record).is_some_and(|f| {
                values
                    .iter()
                    .any(|v| compare(f, v) == Some(Ordering::Equal))
            }),
            Filter::NotIn(path, values) => !path.get(record).is_some_and(|f| {
                values
                    .iter()
                    .any(|v| compare(f, v) == Some(Ordering::Equal))
            }),
            Filter::Exists(path) => path.get(record).is_some_and(|v| !v.is_null()),
            Filter::Not(inner) => !inner.matches(record),
            Filter::And(a, b) => a.matches(record) && b.matches(record),
            Filter::Or(a, b) => a.matches(record) || b.matches(record),
        }
    }

    /// The record's top-level fields the filter reads (to parse only those).
    pub fn fields(&self, out: &mut Vec<String>) {
        let mut add = |path: &Path| {
            if let Some(first) = path.0.first() {
                if !out.contains(first) {
                    out.push(first.clone());
                }
            }
        };
        match self {
            Filter::Compare(path, _, _)
            | Filter::In(path, _)
            | Filter::NotIn(path, _)
            | Filter::Exists(path) => add(path),
            Filter::Not(inner) => inner.fields(out),
            Filter::And(a, b) | Filter::Or(a, b) => {
                a.fields(out);
                b.fields(out);
            }
        }
    }
}

impl Path {
    pub fn parse(text: &str) -> Option<Path> {
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        parts
            .iter()
            .all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .then_some(Path(parts))
    }

    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(value, |v, key| v.get(key))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Numbers (and numeric strings against numbers) compare as numbers; strings as text;
/// booleans and null only for equality. `None`: not comparable.
fn compare(field: &Value, value: &Value) -> Option<Ordering> {
    match (field, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::Number(b)) => {
            a.trim().parse::<f64>().ok()?.partial_cmp(&b.as_f64()?)
        }
        (Value::Number(a), Value::String(b)) => {
            a.as_f64()?.partial_cmp(&b.trim().parse::<f64>().ok()?)
        }
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(Ordering::Equal),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "'{s}'"),
            Token::Str(s) => write!(f, "\"{s}\""),
            Token::Num(n) => write!(f, "{n}"),
            Token::Op(op) => write!(
                f,
                "'{}'",
                match op {
                    Op::Eq => "==",
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                }
            ),
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::LBracket => f.write_str("'['"),
            Token::RBracket => f.write_str("']'"),
            Token::Comma => f.write_str("','"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, message: String| FilterError {
        column: i + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' | ')' | '[' | ']' | ',' => {
                out.push((
                    start + 1,
                    match c {
                        '(' => Token::LParen,
                        ')' => Token::RParen,
                        '[' => Token::LBracket,
                        ']' => Token::RBracket,
                        _ => Token::Comma,
                    },
                ));
                i += 1;
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    ('=', _) => return Err(err(i, "'=' is not an operator (use '==')".into())),
                    _ => return Err(err(i, "'!' is not an operator (use '!=' or 'not')".into())),
                };
                out.push((start + 1, Token::Op(op)));
                i += len;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string".into())),
                        Some('"') => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(e @ ('"' | '\\')) => s.push(*e),
                                _ => {
                                    return Err(err(
                                        i,
                                        "only \\\" and \\\\ are escapes in a string".into(),
                                    ))
                                }
                            }
                            i += 2;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push((start + 1, Token::Str(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '-' | '+'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| err(start, format!("{text:?} is not a number")))?;
                out.push((start + 1, Token::Num(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
                {
                    i += 1;
                }
                out.push((start + 1, Token::Ident(chars[start..i].iter().collect())));
            }
            other => return Err(err(i, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    /// Parentheses and `not` open around the current token.
    nesting: usize,
    /// `and`/`or` read so far.
    and_or: usize,
}

impl Parser {
    fn peek(&self) -> Option<(usize, &Token)> {
        self.tokens.get(self.pos).map(|(c, t)| (*c, t))
    }

    fn next(&mut self) -> Option<(usize, Token)> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some((_, Token::Ident(w))) if w == word)
    }

    fn fail<T>(&self, expected: &str) -> Result<T, FilterError> {
        match self.peek() {
            Some((column, t)) => Err(FilterError {
                column,
                message: format!("expected {expected}, found {t}"),
            }),
            None => Err(FilterError {
                column: self.end,
                message: format!("expected {expected}, found the end"),
            }),
        }
    }

    /// Fails at the current token when it is one too many: a stack overflow aborts the
    /// process, so a filter deep enough to cause one is refused here.
    fn limit(&self, count: usize, max: usize, what: &str) -> Result<(), FilterError> {
        match self.peek() {
            Some((column, t)) if count >= max => Err(FilterError {
                column,
                message: format!("{t} makes more than {max} {what}"),
            }),
            _ => Ok(()),
        }
    }

    fn count_and_or(&mut self) -> Result<(), FilterError> {
        self.limit(self.and_or, MAX_AND_OR, "'and'/'or' in one filter")?;
        self.and_or += 1;
        Ok(())
    }

    /// Runs `inner` one level of parentheses or `not` deeper.
    fn nested(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<Filter, FilterError>,
    ) -> Result<Filter, FilterError> {
        self.limit(self.nesting, MAX_NESTING, "nested parentheses and 'not'")?;
        self.nesting += 1;
        let result = inner(self);
        self.nesting -= 1;
        result
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.count_and_or()?;
            self.pos += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.count_and_or()?;
            self.pos += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            return self.nested(|p| {
                p.pos += 1;
                Ok(Filter::Not(Box::new(p.unary()?)))
            });
        }
        if self.keyword("exists") {
            self.pos += 1;
            return Ok(Filter::Exists(self.path()?));
        }
        if matches!(self.peek(), Some((_, Token::LParen))) {
            return self.nested(|p| {
                p.pos += 1;
                let inner = p.or()?;
                if !matches!(p.peek(), Some((_, Token::RParen))) {
                    return p.fail("')'");
                }
                p.pos += 1;
                Ok(inner)
            });
        }
        let path = self.path()?;
        match self.peek() {
            Some((_, Token::Op(op))) => {
                let op = *op;
                self.pos += 1;
                Ok(Filter::Compare(path, op, self.value()?))
            }
            Some((_, Token::Ident(w))) if w == "in" => {
                self.pos += 1;
                Ok(Filter::In(path, self.list()?))
            }
            Some((_, Token::Ident(w))) if w == "not" => {
                self.pos += 1;
                if !self.keyword("in") {
                    return self.fail("'in' after 'not'");
                }
                self.pos += 1;
                Ok(Filter::NotIn(path, self.list()?))
            }
            Some((_, Token::Ident(w))) if w == "exists" => {
                self.pos += 1;
                Ok(Filter::Exists(path))
            }
            _ => self.fail("an operator (==, !=, <, <=, >, >=, in, not in, exists)"),
        }
    }

    fn path(&mut self) -> Result<Path, FilterError> {
        match self.peek() {
            Some((column, Token::Ident(name))) => {
                let path = Path::parse(name).ok_or_else(|| FilterError {
                    column,
                    message: format!("{name:?} is not a field path"),
                })?;
                if ["and", "or", "not", "in", "exists", "true", "false", "null"]
                    .contains(&name.as_str())
                {
                    return self.fail("a field name");
                }
                self.pos += 1;
                Ok(path)
            }
            _ => self.fail("a field name"),
        }
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        let value = match self.peek() {
            Some((_, Token::Str(s))) => Value::from(s.clone()),
            Some((_, Token::Num(n))) => serde_json::Number::from_f64(*n)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Some((_, Token::Ident(w))) if w == "true" => Value::Bool(true),
            Some((_, Token::Ident(w))) if w == "false" => Value::Bool(false),
            Some((_, Token::Ident(w))) if w == "null" => Value::Null,
            _ => return self.fail("a value (\"text\", a number, true, false or null)"),
        };
        self.pos += 1;
        Ok(value)
    }

    fn list(&mut self) -> Result<Vec<Value>, FilterError> {
        if !matches!(self.peek(), Some((_, Token::LBracket))) {
            return self.fail("'[' to start a list");
        }
        self.pos += 1;
        let mut values = vec![self.value()?];
        loop {
            match self.next() {
                Some((_, Token::Comma)) => values.push(self.value()?),
                Some((_, Token::RBracket)) => return Ok(values),
                _ => {
                    self.pos -= 1;
                    return self.fail("',' or ']'");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({
            "authorizationResponseStatus": "Declined",
            "authorizationResponse": "51",
            "authorizedAmount": 612.5,
            "cardType": "Visa",
            "cardNumber": {"mask": "4242"},
            "mccCode": "5812",
        })
    }

    fn check(text: &str) -> bool {
        Filter::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&record())
    }

    #[test]
    fn the_documented_examples() {
        assert!(check(r#"authorizationResponseStatus != "Approved""#));
        assert!(check("authorizedAmount >= 500"));
        assert!(!check("authorizedAmount < 500"));
        assert!(check(
            r#"cardType in ["Visa", "Mastercard"] and authorizedAmount > 600"#
        ));
        assert!(check(r#"cardType not in ["Discover"]"#));
        assert!(check(
            "exists cardNumber.mask and not exists uar.entity.taxId"
        ));
        assert!(check(
            r#"cardNumber.mask == "4242" or authorizedAmount == 1"#
        ));
        assert!(check(r#"not (authorizationResponse == "00")"#));
        assert!(
            check("mccCode == 5812"),
            "numeric strings compare as numbers"
        );
        assert!(check(
            "missing != \"x\" and missing not in [1] and not (missing == 1) and not (missing > 1)"
        ));
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        // true or (false and false)
        assert!(check(
            r#"cardType == "Visa" or cardType == "Amex" and authorizedAmount < 1"#
        ));
        // (true or false) and false
        assert!(!check(
            r#"(cardType == "Visa" or cardType == "Amex") and authorizedAmount < 1"#
        ));
    }

    #[test]
    fn errors_name_the_column() {
        let e = |t: &str| Filter::parse(t).unwrap_err().to_string();
        assert_eq!(e("authorizedAmount >="), "expected a value (\"text\", a number, true, false or null), found the end at column 20");
        assert_eq!(
            e("authorizedAmount = 5"),
            "'=' is not an operator (use '==') at column 18"
        );
        assert_eq!(
            e("cardType in [\"Visa\" \"Amex\"]"),
            "expected ',' or ']', found \"Amex\" at column 21"
        );
        assert_eq!(e("a == \"x"), "unterminated string at column 6");
        assert_eq!(e("(a == 1"), "expected ')', found the end at column 8");
        assert_eq!(
            e("a == 1 b"),
            "unexpected 'b' after a complete expression at column 8"
        );
        assert_eq!(e("a ~ 1"), "unexpected character '~' at column 3");
        assert_eq!(e(""), "expected a field name, found the end at column 1");
    }
}

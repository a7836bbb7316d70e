//! How queries and permission filters compare two values: numbers across int, double and
//! decimal by numeric value, `null` only equal to `null`, strings by code point (or by simple
//! case folding with `[c]`), and values of unrelated kinds never equal and never ordered.

use std::cmp::Ordering;

use crate::value::Value;

use super::ast::CompareOp;

/// The order of two values for query purposes, or `None` when they cannot be ordered against
/// each other (different kinds, or a NaN against a number).
///
/// `null` equals `null` here; the ordering operators refuse nulls separately.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Int(i), other) | (other, Value::Int(i)) if other.as_f64().is_some() => {
            let d = other.as_f64()?;
            let ord = int_vs_double(*i, d)?;
            Some(if matches!(a, Value::Int(_)) {
                ord
            } else {
                ord.reverse()
            })
        }
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => doubles(x, y),
            (None, None) if a.kind() == b.kind() => Some(a.cmp(b)),
            _ => None,
        },
    }
}

/// Compares doubles numerically: `-0.0 == 0.0`, NaN equals only NaN.
fn doubles(x: f64, y: f64) -> Option<Ordering> {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Some(Ordering::Equal),
        (false, false) => x.partial_cmp(&y),
        _ => None,
    }
}

/// Compares an integer with a double exactly, without rounding the integer.
fn int_vs_double(i: i64, d: f64) -> Option<Ordering> {
    // 2^63 as a double; every double at or above it is bigger than any i64.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if d.is_nan() {
        return None;
    }
    if d >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if d < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = d.trunc();
    // In range, so the conversion is exact.
    let whole_int = whole as i64;
    Some(i.cmp(&whole_int).then_with(|| {
        if d > whole {
            Ordering::Less
        } else if d < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

/// Whether two values are equal for `==`.
pub(crate) fn equals(a: &Value, b: &Value, case_insensitive: bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if case_insensitive => folded(x).eq(folded(y)),
        _ => order(a, b) == Some(Ordering::Equal),
    }
}

/// The characters of `s` lowercased one by one: the one case folding of every `[c]` operator.
/// (Unlike `str::to_lowercase` it gives a capital sigma no word-final form, so `==[c]` and
/// `CONTAINS[c]` agree, and the browser build needs no tables for word boundaries.)
fn folded(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
}

/// [`folded`] as a string.
fn folded_text(s: &str) -> String {
    folded(s).collect()
}

/// Evaluates `a op b` for every operator but `IN` and `BETWEEN` (which the evaluator expands
/// into equality and ordering).
pub(crate) fn compare(op: CompareOp, case_insensitive: bool, a: &Value, b: &Value) -> bool {
    match op {
        CompareOp::Eq | CompareOp::In => equals(a, b, case_insensitive),
        CompareOp::Ne => !equals(a, b, case_insensitive),
        CompareOp::Lt => ordered(a, b).is_some_and(Ordering::is_lt),
        CompareOp::Le => ordered(a, b).is_some_and(Ordering::is_le),
        CompareOp::Gt => ordered(a, b).is_some_and(Ordering::is_gt),
        CompareOp::Ge => ordered(a, b).is_some_and(Ordering::is_ge),
        CompareOp::BeginsWith => text_op(a, b, case_insensitive, |x, y| x.starts_with(y)),
        CompareOp::EndsWith => text_op(a, b, case_insensitive, |x, y| x.ends_with(y)),
        CompareOp::Contains => text_op(a, b, case_insensitive, |x, y| {
            y.is_empty() || x.windows(y.len()).any(|w| w == y)
        }),
        CompareOp::Like => match (a, b) {
            (Value::String(text), Value::String(pattern)) if case_insensitive => {
                like(&folded_text(text), &folded_text(pattern))
            }
            (Value::String(text), Value::String(pattern)) => like(text, pattern),
            _ => false,
        },
        CompareOp::Between => false,
    }
}

/// The order for `<`, `<=`, `>`, `>=`: never with a null, never between unrelated kinds.
pub(crate) fn ordered(a: &Value, b: &Value) -> Option<Ordering> {
    if a.is_null() || b.is_null() {
        return None;
    }
    order(a, b)
}

/// Runs a byte-level test on two strings (after case folding with `[c]`) or two binaries.
fn text_op(a: &Value, b: &Value, case_insensitive: bool, test: fn(&[u8], &[u8]) -> bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if case_insensitive => {
            test(folded_text(x).as_bytes(), folded_text(y).as_bytes())
        }
        (Value::String(x), Value::String(y)) => test(x.as_bytes(), y.as_bytes()),
        (Value::Binary(x), Value::Binary(y)) if !case_insensitive => test(x, y),
        _ => false,
    }
}

/// Glob matching: `*` matches any run of characters, `?` exactly one character.
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    let (mut t, mut p) = (0, 0);
    // Where the last `*` was, and how much text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Decimal;

    #[test]
    fn every_case_insensitive_operator_folds_the_same_way() {
        let s = |t: &str| Value::String(t.into());
        let (upper, lower) = (s("ΟΔΟΣ Straße"), s("οδος straße"));
        let folded_upper = s("οδοσ straße");
        for op in [
            CompareOp::Eq,
            CompareOp::BeginsWith,
            CompareOp::EndsWith,
            CompareOp::Contains,
            CompareOp::Like,
        ] {
            assert!(compare(op, true, &upper, &folded_upper), "{op:?}");
            assert!(compare(op, true, &folded_upper, &upper), "{op:?}");
            assert!(!compare(op, true, &upper, &lower), "{op:?}");
        }
        assert!(compare(CompareOp::Contains, true, &upper, &s("ΔΟσ s")));
    }

    #[test]
    fn numbers_compare_across_kinds() {
        let dec = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
        assert!(equals(&Value::Int(1), &Value::Double(1.0), false));
        assert!(equals(&Value::Double(1.5), &dec("1.5"), false));
        assert!(equals(&dec("2"), &Value::Int(2), false));
        assert!(equals(&Value::Double(-0.0), &Value::Int(0), false));
        assert!(equals(
            &Value::Double(f64::NAN),
            &Value::Double(f64::NAN),
            false
        ));
        assert!(!equals(&Value::Double(f64::NAN), &Value::Int(0), false));
        assert_eq!(
            order(&Value::Int(i64::MAX), &Value::Double(9.3e18)),
            Some(Ordering::Less)
        );
        assert_eq!(
            order(&Value::Double(2.5), &Value::Int(2)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            order(&Value::Int(-3), &Value::Double(-2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(
            order(&Value::Int(i64::MIN), &Value::Double(-1e300)),
            Some(Ordering::Greater)
        );
        // 2^53 + 1 is not a double; rounding the int would call these equal.
        assert_eq!(
            order(
                &Value::Int(9_007_199_254_740_993),
                &Value::Double(9_007_199_254_740_992.0)
            ),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn nulls_and_unrelated_kinds() {
        assert!(equals(&Value::Null, &Value::Null, false));
        assert!(!equals(&Value::Null, &Value::Int(0), false));
        assert!(compare(CompareOp::Ne, false, &Value::Null, &Value::Int(0)));
        assert!(!compare(CompareOp::Le, false, &Value::Null, &Value::Null));
        assert!(!compare(
            CompareOp::Lt,
            false,
            &Value::from("1"),
            &Value::Int(2)
        ));
        assert!(compare(
            CompareOp::Ne,
            false,
            &Value::from("1"),
            &Value::Int(1)
        ));
        assert!(compare(
            CompareOp::Lt,
            false,
            &Value::from("abc"),
            &Value::from("abd")
        ));
        assert!(compare(
            CompareOp::Ge,
            false,
            &Value::Date(5),
            &Value::Date(5)
        ));
    }

    #[test]
    fn string_operators() {
        let s = Value::from;
        assert!(compare(CompareOp::BeginsWith, false, &s("Hello"), &s("He")));
        assert!(!compare(
            CompareOp::BeginsWith,
            false,
            &s("Hello"),
            &s("he")
        ));
        assert!(compare(CompareOp::BeginsWith, true, &s("Hello"), &s("he")));
        assert!(compare(CompareOp::EndsWith, true, &s("ÉCOLE"), &s("éCole")));
        assert!(compare(CompareOp::Contains, false, &s("banana"), &s("nan")));
        assert!(compare(CompareOp::Contains, false, &s("banana"), &s("")));
        assert!(!compare(
            CompareOp::Contains,
            false,
            &s("ban"),
            &s("banana")
        ));
        assert!(!compare(CompareOp::Eq, true, &s("Straße"), &s("STRASSE")));
        assert!(compare(CompareOp::Eq, true, &s("ÅSA"), &s("åsa")));
        assert!(compare(CompareOp::Ne, true, &s("a"), &s("B")));
        let bin = |b: &[u8]| Value::Binary(b.to_vec());
        assert!(compare(
            CompareOp::BeginsWith,
            false,
            &bin(b"\x01\x02"),
            &bin(b"\x01")
        ));
        assert!(compare(
            CompareOp::Contains,
            false,
            &bin(b"\x01\x02\x03"),
            &bin(b"\x02\x03")
        ));
        assert!(!compare(
            CompareOp::BeginsWith,
            false,
            &s("a"),
            &Value::Null
        ));
    }

    #[test]
    fn like_wildcards() {
        assert!(like("hello", "h*o"));
        assert!(like("hello", "h?llo"));
        assert!(like("hello", "*"));
        assert!(like("", "*"));
        assert!(!like("", "?"));
        assert!(like("abcbd", "a*bd"));
        assert!(!like("abcbe", "a*bd"));
        assert!(like("日本語", "日?語"));
        assert!(like("aaa", "a*a*a"));
        assert!(!like("aa", "a*a*a"));
        assert!(compare(
            CompareOp::Like,
            true,
            &Value::from("HeLLo"),
            &Value::from("h*O")
        ));
    }
}

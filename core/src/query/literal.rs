//! Literal values in query text: the canonical way each [`Value`] is written, and the decoding
//! helpers the lexer needs (base64 for `B64"..."`, calendar dates for `YYYY-MM-DD@HH:MM:SS`).

use std::fmt;

use crate::value::Value;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Milliseconds in a second and nanoseconds in a millisecond, for `T<seconds>:<nanos>` dates.
const MS_PER_SECOND: i64 = 1_000;
const NS_PER_MS: i64 = 1_000_000;

/// Whether `value` has a literal form in query text (scalars other than links).
pub(crate) fn is_writable(value: &Value) -> bool {
    !matches!(
        value,
        Value::Link(_) | Value::List(_) | Value::Set(_) | Value::Dict(_) | Value::Object(_)
    )
}

/// Writes the canonical literal for a scalar value, one that parses back to an equal value.
///
/// Values without a literal form (see [`is_writable`]) never reach a parsed or bound query; they
/// are written in their debug form.
pub(crate) fn write_value(f: &mut fmt::Formatter<'_>, value: &Value) -> fmt::Result {
    match value {
        Value::Null => f.write_str("null"),
        Value::Bool(b) => write!(f, "{b}"),
        Value::Int(i) => write!(f, "{i}"),
        Value::Double(d) => write_double(f, *d),
        Value::String(s) => write_string(f, s),
        Value::Binary(bytes) => write!(f, "B64\"{}\"", base64_encode(bytes)),
        Value::Date(ms) => {
            let seconds = ms / MS_PER_SECOND;
            let nanos = (ms % MS_PER_SECOND) * NS_PER_MS;
            write!(f, "T{seconds}:{nanos}")
        }
        Value::ObjectId(oid) => write!(f, "oid({oid})"),
        Value::Uuid(uuid) => write!(f, "uuid({uuid})"),
        Value::Decimal(d) => write!(f, "decimal128({d})"),
        other => write!(f, "{other:?}"),
    }
}

fn write_double(f: &mut fmt::Formatter<'_>, d: f64) -> fmt::Result {
    if d.is_nan() {
        f.write_str("nan")
    } else if d.is_infinite() {
        f.write_str(if d > 0.0 { "inf" } else { "-inf" })
    } else {
        // Always with a `.` or an exponent, so the text lexes as a double again, and the
        // shortest text that round-trips.
        f.write_str(&crate::value::finite_double_text(d))
    }
}

/// Writes a double-quoted string literal with the escapes the lexer understands.
pub(crate) fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let triple = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = ((triple >> (18 - 6 * i)) & 0x3f) as usize;
                out.push(char::from(BASE64.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional. `None` on any other character or a length that
/// cannot come from an encoding.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for byte in body.bytes() {
        let sextet = BASE64.iter().position(|&b| b == byte)?;
        buffer = (buffer << 6) | sextet as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// Milliseconds since the epoch for `T<seconds>:<nanos>`; `None` when the nanoseconds are out of
/// range or the result overflows. Sub-millisecond precision is dropped.
pub(crate) fn date_from_timestamp(seconds: i64, nanos: i64) -> Option<i64> {
    if nanos.abs() >= MS_PER_SECOND * NS_PER_MS {
        return None;
    }
    seconds
        .checked_mul(MS_PER_SECOND)?
        .checked_add(nanos / NS_PER_MS)
}

/// Milliseconds since the epoch for a UTC calendar date and time; `None` for an impossible date
/// or time.
pub(crate) fn date_from_civil(
    [year, month, day, hour, minute, second]: [i64; 6],
    nanos: i64,
) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(0..=9999).contains(&year)
        || !(1..=month_days).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..60).contains(&second)
    {
        return None;
    }
    let days = days_since_epoch(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    date_from_timestamp(seconds, nanos)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (year 0 to 9999, so nothing overflows).
fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    // Count years from March so that the leap day is the last day of the counted year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..10u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(97)).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text), Some(bytes));
        }
        assert_eq!(base64_encode(b"hi"), "aGk=");
        assert_eq!(base64_decode("aGk"), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("a*=="), None);
        assert_eq!(base64_decode("a==="), None);
    }

    #[test]
    fn civil_dates_convert_to_epoch_milliseconds() {
        assert_eq!(date_from_civil([1970, 1, 1, 0, 0, 0], 0), Some(0));
        assert_eq!(
            date_from_civil([2000, 3, 1, 0, 0, 1], 5_000_000),
            Some(951_868_801_005)
        );
        assert_eq!(date_from_civil([1969, 12, 31, 23, 59, 59], 0), Some(-1_000));
        assert_eq!(date_from_civil([2023, 2, 29, 0, 0, 0], 0), None);
        assert_eq!(
            date_from_civil([2024, 2, 29, 0, 0, 0], 0),
            Some(1_709_164_800_000)
        );
        assert_eq!(date_from_civil([2024, 13, 1, 0, 0, 0], 0), None);
        assert_eq!(date_from_civil([2024, 1, 1, 24, 0, 0], 0), None);
    }

    #[test]
    fn timestamps_check_their_range() {
        assert_eq!(date_from_timestamp(1, 500_000_000), Some(1_500));
        assert_eq!(date_from_timestamp(-1, -500_000_000), Some(-1_500));
        assert_eq!(date_from_timestamp(0, 1_000_000_000), None);
        assert_eq!(date_from_timestamp(i64::MAX, 0), None);
    }
}

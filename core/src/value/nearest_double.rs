//! Decimal digits to the nearest double, exactly (ties to even), by a long division of big
//! integers: slower than the standard library's parser but without its power tables, so the
//! browser build carries one small float parser instead of a table-driven one.

use std::cmp::Ordering;

/// Significant digits kept: a double is decided by at most 768 of them, later ones only say
/// whether anything nonzero follows (kept as one final `1`).
const MAX_DIGITS: usize = 800;

/// An unsigned big integer: little-endian 32-bit limbs, no zero limbs at the top.
#[derive(Clone)]
struct Big(Vec<u32>);

impl Big {
    fn mul_add(&mut self, factor: u32, addend: u32) {
        let mut carry = u64::from(addend);
        for limb in &mut self.0 {
            let v = u64::from(*limb) * u64::from(factor) + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_pow10(&mut self, mut n: u64) {
        while n >= 9 {
            self.mul_add(1_000_000_000, 0);
            n -= 9;
        }
        self.mul_add(10u32.pow(n as u32), 0);
    }

    fn bits(&self) -> i64 {
        self.0.last().map_or(0, |top| {
            self.0.len() as i64 * 32 - i64::from(top.leading_zeros())
        })
    }

    /// This number shifted left by `n` bits (`self` is not zero).
    fn shifted(&self, n: i64) -> Big {
        let bits = (n % 32) as u32;
        let mut limbs = vec![0; (n / 32) as usize];
        limbs.reserve(self.0.len() + 1);
        let mut carry = 0;
        for &limb in &self.0 {
            limbs.push((limb << bits) | carry);
            carry = if bits == 0 { 0 } else { limb >> (32 - bits) };
        }
        if carry > 0 {
            limbs.push(carry);
        }
        Big(limbs)
    }

    /// Shifts right by one bit, dropping the lowest.
    fn halve(&mut self) {
        let mut carry = 0;
        for limb in self.0.iter_mut().rev() {
            let low = *limb & 1;
            *limb = (*limb >> 1) | (carry << 31);
            carry = low;
        }
        if self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn compare(&self, other: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }

    /// Subtracts `other`, which is at most `self`.
    fn subtract(&mut self, other: &Big) {
        let mut borrow = 0;
        for (i, limb) in self.0.iter_mut().enumerate() {
            let v = i64::from(*limb) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
            *limb = v as u32;
            borrow = i64::from(v < 0);
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
}

/// `num / den` for a quotient below 2^55, and whether the remainder is below, at or above half
/// of `den`.
fn divide(mut num: Big, den: &Big) -> (u64, Ordering) {
    let mut quotient = 0;
    let mut step = den.shifted(54);
    for bit in (0..55).rev() {
        if num.compare(&step) != Ordering::Less {
            num.subtract(&step);
            quotient |= 1 << bit;
        }
        step.halve();
    }
    let half = if num.0.is_empty() {
        Ordering::Less
    } else {
        num.shifted(1).compare(den)
    };
    (quotient, half)
}

/// The double nearest to `±digits × 10^exponent`, `digits` being ASCII digits; magnitudes past
/// `f64::MAX` become infinities and those below the smallest subnormal zeros, as
/// `str::parse::<f64>` does.
pub(super) fn nearest_double(negative: bool, digits: &[u8], exponent: i64) -> f64 {
    let sign = |d: f64| if negative { -d } else { d };
    let start = digits.iter().position(|&d| d != b'0');
    let end = digits.iter().rposition(|&d| d != b'0');
    let (Some(start), Some(end)) = (start, end) else {
        return sign(0.0);
    };
    let mut significant = &digits[start..=end];
    let mut exponent = exponent + (digits.len() - 1 - end) as i64;
    let magnitude = exponent + significant.len() as i64;
    if magnitude > 310 {
        return sign(f64::INFINITY);
    }
    if magnitude < -324 {
        return sign(0.0);
    }
    if significant.len() <= 15 && exponent.abs() <= 22 {
        // Both the digits and the power of ten are exact doubles, so one operation rounds once.
        let n = significant
            .iter()
            .fold(0.0, |n, &d| n * 10.0 + f64::from(d - b'0'));
        let power = (0..exponent.abs()).fold(1.0, |p, _| p * 10.0);
        return sign(if exponent < 0 { n / power } else { n * power });
    }
    let mut sticky = false;
    if significant.len() > MAX_DIGITS {
        exponent += (significant.len() - MAX_DIGITS - 1) as i64;
        significant = &significant[..MAX_DIGITS];
        sticky = true;
    }
    let mut num = Big(Vec::new());
    for &d in significant {
        num.mul_add(10, u32::from(d - b'0'));
    }
    if sticky {
        num.mul_add(10, 1);
    }
    let mut den = Big(vec![1]);
    if exponent >= 0 {
        num.mul_pow10(exponent as u64);
    } else {
        den.mul_pow10(exponent.unsigned_abs());
    }
    // The value lies in [2^(k-1), 2^(k+1)): scaled by 2^shift it lies in [2^52, 2^54), unless
    // it is subnormal, where the scale stops at 2^1074.
    let k = num.bits() - den.bits();
    let mut shift = (53 - k).min(1074);
    let scaled = |shift: i64| {
        if shift >= 0 {
            divide(num.shifted(shift), &den)
        } else {
            divide(num.clone(), &den.shifted(-shift))
        }
    };
    let (mut quotient, mut half) = scaled(shift);
    if quotient >= 1 << 53 {
        shift -= 1;
        (quotient, half) = scaled(shift);
    }
    let round_up = match half {
        Ordering::Greater => true,
        Ordering::Equal => quotient & 1 == 1,
        Ordering::Less => false,
    };
    if round_up {
        quotient += 1;
        if quotient == 1 << 53 {
            quotient >>= 1;
            shift -= 1;
        }
    }
    let bits = if quotient < 1 << 52 {
        quotient
    } else {
        let biased = 1075 - shift;
        if biased >= 2047 {
            return sign(f64::INFINITY);
        }
        ((biased as u64) << 52) | (quotient - (1 << 52))
    };
    sign(f64::from_bits(bits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> f64 {
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{int}{frac}");
        let exponent: i64 = exponent.parse().unwrap_or_default();
        nearest_double(false, digits.as_bytes(), exponent - frac.len() as i64)
    }

    proptest! {
        #[test]
        fn long_decimals_read_as_the_standard_parser_reads_them(
            text in "[0-9]{1,40}(\\.[0-9]{1,40})?(e-?[0-9]{1,3})?",
        ) {
            let expected: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(parse(&text).to_bits(), expected.to_bits(), "{}", text);
        }

        #[test]
        fn halfway_points_round_to_even(
            m in (1u128 << 52)..(1u128 << 53),
            up in 0u32..70,
            down in 0u32..20,
        ) {
            // `2m + 1` needs 54 bits: exactly halfway between two doubles, scaled by a power of 2
            // written out exactly (2^-down as 5^down × 10^-down).
            let odd = 2 * m + 1;
            for text in [format!("{}", odd << up), format!("{}e-{down}", odd * 5u128.pow(down))] {
                let expected: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(parse(&text).to_bits(), expected.to_bits(), "{}", text);
            }
        }
    }

    #[test]
    fn extremes_and_many_digits() {
        let long = format!("0.{}1e-300", "0".repeat(900));
        let nines = format!("{}e-400", "9".repeat(1000));
        for text in [
            "4.9406564584124654e-324",
            "2.4703282292062327e-324",
            "2.4703282292062328e-324",
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "2.2250738585072011e-308",
            "2.2250738585072014e-308",
            "9007199254740993",
            "9007199254740995",
            "123456789012345678901234567890",
            long.as_str(),
            nines.as_str(),
        ] {
            let expected: f64 = text.parse().unwrap();
            assert_eq!(parse(text).to_bits(), expected.to_bits(), "{text}");
        }
    }
}

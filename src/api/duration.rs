//! Go-style duration strings (`"720h"`, `"90m"`, `"1h30m"`), the format Kubernetes APIs use.
//!
//! Contract: [`PATTERN`] is what the CRD schema admits, and [`parse`] reads a string exactly as
//! Go's `time.ParseDuration` (and so CEL's `duration()` at admission) reads it: units in any
//! order and repeated, fractions of any unit, the same rounding and the same overflow limit, so
//! nothing the apiserver admits is refused here. Durations here are never negative, so a negative
//! one is refused. [`format`] writes durations back in the compact shape for messages.

use k8s_openapi::jiff::SignedDuration;
use k8s_openapi::jiff::fmt::friendly::{Designator, Spacing, SpanPrinter};
use std::time::Duration;

/// One or more `<number><unit>` groups, non-negative, units as Go spells them.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not a Go-style duration.
    #[error("{0:?} is not a duration like \"720h\", \"90m\" or \"1h30m\"")]
    Malformed(String),
    /// Below zero.
    #[error("{0:?} is negative; durations here must be zero or more")]
    Negative(String),
}

/// The largest duration Go represents, in nanoseconds (2562047h47m16.854775807s).
const LIMIT: u64 = i64::MAX as u64;

/// Nanoseconds per unit, as Go spells the units (both micro signs included).
fn unit(name: &str) -> Option<u64> {
    Some(match name {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Parses a Go-style duration into a non-negative [`Duration`], as Go would.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_owned());
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(malformed());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let (whole, fraction, scale, unit_name, after) = group(rest).ok_or_else(malformed)?;
        rest = after;
        let per = unit(unit_name).ok_or_else(malformed)?;
        let mut value = whole
            .checked_mul(per)
            .filter(|v| *v <= 1 << 63)
            .ok_or_else(malformed)?;
        if fraction > 0 {
            // As Go does it: in floating point, nanosecond-accurate for fractions of an hour.
            value += (fraction as f64 * (per as f64 / scale)) as u64;
            if value > 1 << 63 {
                return Err(malformed());
            }
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= 1 << 63)
            .ok_or_else(malformed)?;
    }
    match (negative, total) {
        (_, 0) => Ok(Duration::ZERO),
        (true, _) => Err(DurationError::Negative(text.to_owned())),
        (false, t) if t > LIMIT => Err(malformed()),
        (false, t) => Ok(Duration::from_nanos(t)),
    }
}

/// One `<int>[.<fraction>]<unit>` group at the start of `s`: the whole part, the fraction's
/// digits and its scale (10 to the number of digits kept), the unit, and what follows. `None`
/// when the group has no digits, no unit, or a whole part that overflows.
fn group(s: &str) -> Option<(u64, u64, f64, &str, &str)> {
    let bytes = s.as_bytes();
    if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
        return None;
    }
    let mut i = 0;
    let mut whole: u64 = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        whole = whole
            .checked_mul(10)?
            .checked_add(u64::from(bytes[i] - b'0'))
            .filter(|w| *w <= 1 << 63)?;
        i += 1;
    }
    let has_whole = i > 0;
    let (mut fraction, mut scale, mut has_fraction) = (0u64, 1f64, false);
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let mut overflowed = false;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            has_fraction = true;
            // Digits past what fits are dropped, as Go drops them.
            let next = fraction
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(bytes[i] - b'0')));
            match next.filter(|f| !overflowed && *f <= 1 << 63) {
                Some(f) if fraction <= LIMIT / 10 => {
                    fraction = f;
                    scale *= 10.0;
                }
                _ => overflowed = true,
            }
            i += 1;
        }
    }
    if !has_whole && !has_fraction {
        return None;
    }
    let unit_end = bytes[i..]
        .iter()
        .position(|b| *b == b'.' || b.is_ascii_digit())
        .map_or(bytes.len(), |p| i + p);
    if unit_end == i {
        return None;
    }
    Some((whole, fraction, scale, &s[i..unit_end], &s[unit_end..]))
}

/// `d` as the API spells durations: `"1h"`, `"90m"` is `"1h30m"`, `"0s"`.
pub fn format(d: Duration) -> String {
    let signed = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    SpanPrinter::new()
        .designator(Designator::Compact)
        .spacing(Spacing::None)
        .duration_to_string(&signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_shapes_kubernetes_users_write() {
        let cases = [
            ("720h", 720 * 3600),
            ("90m", 90 * 60),
            ("1h30m", 5400),
            ("0s", 0),
            ("1h0m0s", 3600),
            ("2160h", 2160 * 3600),
            ("45s", 45),
        ];
        for (text, secs) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse("10µs"), Ok(Duration::from_micros(10)));
    }

    #[test]
    fn formats_in_the_shape_it_reads() {
        for (secs, text) in [
            (3600, "1h"),
            (5400, "1h30m"),
            (0, "0s"),
            (45, "45s"),
            (3661, "1h1m1s"),
        ] {
            assert_eq!(format(Duration::from_secs(secs)), text);
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn refuses_what_the_schema_refuses() {
        for text in ["", "1", "-1h", "1 hour", "PT1H", "1d", "h", "1h-30m", "1H"] {
            assert!(parse(text).is_err(), "{text:?} should be refused");
        }
    }
}

//! Go-style duration strings (`"720h"`, `"90m"`, `"1h30m"`), the format Kubernetes APIs use.
//!
//! Contract: [`PATTERN`] is what the CRD schema admits, and [`parse`] accepts every string the
//! pattern admits, with the value Go's `time.ParseDuration` (and so CEL's `duration()`) gives it.
//! Parsing is delegated to jiff's friendly format, which is a superset of this shape, and
//! [`format`] writes durations back in the same compact shape for messages.

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

/// Parses a Go-style duration into a non-negative [`Duration`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    // jiff also reads ISO 8601 ("PT1H") and long forms ("1 hour"); the schema never admits them,
    // and refusing them here keeps Rust and the apiserver in agreement.
    let shaped = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'n' | 'u' | 'µ' | 'm' | 's' | 'h'));
    if !shaped {
        return Err(DurationError::Malformed(text.to_owned()));
    }
    let signed: SignedDuration = text
        .parse()
        .map_err(|_| DurationError::Malformed(text.to_owned()))?;
    Duration::try_from(signed).map_err(|_| DurationError::Negative(text.to_owned()))
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

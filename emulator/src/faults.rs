//! Latency, concurrency limits and injected failures, so clients meet Twilio's bad days.
//!
//! Contract: [`Knobs`] are set by flags at start and changed live through the admin API. Each
//! request rolls the dice once: a connection reset (after the request took effect, as when a
//! connection drops mid-answer), a 429/20429 or a 500/503 (before it took effect), with the
//! given rates; independently it may be slowed. Rates are probabilities in 0..=1.

use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Added to every request, while it holds its concurrency slot.
    pub latency_ms: u64,
    /// In-flight requests allowed per account before 429/20429.
    pub concurrency_limit: Option<usize>,
    /// Probability of a 429/20429.
    pub fault_429: f64,
    /// Probability of a 500 or 503.
    pub fault_5xx: f64,
    /// Probability of a connection reset after the request was processed, before the answer.
    pub fault_reset: f64,
    /// Probability of a response delayed by `slow_ms`.
    pub fault_slow: f64,
    pub slow_ms: u64,
    /// Sent as Retry-After on 429s when set; Twilio's core API documents none.
    pub retry_after_secs: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            concurrency_limit: None,
            fault_429: 0.0,
            fault_5xx: 0.0,
            fault_reset: 0.0,
            fault_slow: 0.0,
            slow_ms: 3000,
            retry_after_secs: None,
        }
    }
}

/// What the dice decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Reset,
    TooManyRequests,
    ServerError(u16),
}

impl Knobs {
    pub fn roll(&self) -> Option<Fault> {
        let mut rng = rand::rng();
        let x: f64 = rng.random();
        let mut edge = self.fault_reset;
        if x < edge {
            return Some(Fault::Reset);
        }
        edge += self.fault_429;
        if x < edge {
            return Some(Fault::TooManyRequests);
        }
        edge += self.fault_5xx;
        if x < edge {
            return Some(Fault::ServerError(if rng.random_bool(0.5) { 500 } else { 503 }));
        }
        None
    }

    pub fn delay(&self) -> Duration {
        let slow = self.fault_slow > 0.0 && rand::rng().random_bool(self.fault_slow.min(1.0));
        Duration::from_millis(self.latency_ms + if slow { self.slow_ms } else { 0 })
    }
}

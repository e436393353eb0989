//! Crash points for tests of crash safety.
//!
//! Contract: when the environment variable `TWILIO_OPERATOR_FAILPOINT` names a point, the
//! process aborts the moment it reaches that point, as a kill -9 would stop it. Unset (always,
//! in production) every point is a no-op.

use std::sync::OnceLock;

/// Aborts the process if `name` is the configured failpoint.
pub fn hit(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("TWILIO_OPERATOR_FAILPOINT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}

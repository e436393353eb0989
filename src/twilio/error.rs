//! Twilio failures, typed and classified so callers decide retry, backoff or report.
//!
//! Contract: an [`Error`] never carries a credential or a response body that could hold one;
//! it carries the operation, the HTTP status, Twilio's code, message and more_info link.

use std::time::Duration;

/// How a caller should treat a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 401 / 20003: the credentials are wrong, revoked, or their account is not active. Do not
    /// retry until something changes.
    Credentials,
    /// 404 / 20404: the resource does not exist (a delete treats this as done).
    NotFound,
    /// 429 / 20429: too many concurrent requests; never processed, always safe to retry.
    RateLimited,
    /// 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// Anything else, such as 21479 (closed subaccount): retrying will not help.
    Permanent,
}

/// A failed Twilio call. No variant holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Twilio answered with an error.
    #[error("Twilio {operation} returned HTTP {status}{}: {message}{}", code.map(|c| format!(" code {c}")).unwrap_or_default(), more_info.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Api {
        /// The operation, as Twilio's OpenAPI names it.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// Twilio's error code.
        code: Option<i64>,
        /// Twilio's message.
        message: String,
        /// Twilio's link to the code's documentation.
        more_info: Option<String>,
        /// How long Twilio asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The request failed on its way, after it may have reached Twilio.
    #[error("Twilio {operation} failed in transport: {detail}")]
    Transport {
        /// The operation.
        operation: &'static str,
        /// What went wrong, without the request's credentials.
        detail: String,
    },
    /// The connection was never made, so Twilio cannot have acted on the request.
    #[error("Twilio {operation} could not connect: {detail}")]
    Connect {
        /// The operation.
        operation: &'static str,
        /// What went wrong, without the request's credentials.
        detail: String,
    },
    /// The answer could not be read.
    #[error("Twilio {operation} answered with a body this client cannot read: {detail}")]
    Decode {
        /// The operation.
        operation: &'static str,
        /// What went wrong, without the request's credentials.
        detail: String,
    },
    /// This process no longer leads (its renew deadline passed), so no request was sent.
    #[error("Twilio {operation} was not sent: this replica no longer holds the leader Lease")]
    Fenced {
        /// The operation.
        operation: &'static str,
    },
    /// A SID was malformed, so no request was sent.
    #[error("{what} {value:?} is not a valid Twilio SID ({prefix} followed by 32 hex digits)")]
    InvalidSid {
        /// What the SID was for.
        what: &'static str,
        /// The prefix a SID of that kind has.
        prefix: &'static str,
        /// The malformed value.
        value: String,
    },
}

impl Error {
    /// What kind of failure this is, for retries and reasons.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api { status, code, .. } => match (status, code) {
                (429, _) | (_, Some(20429)) => ErrorClass::RateLimited,
                (401, _) | (_, Some(20003)) => ErrorClass::Credentials,
                (404, _) | (_, Some(20404)) => ErrorClass::NotFound,
                (500..=599, _) => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            Error::Transport { .. } | Error::Connect { .. } | Error::Fenced { .. } => ErrorClass::Transient,
            Error::Decode { .. } | Error::InvalidSid { .. } => ErrorClass::Permanent,
        }
    }

    /// Twilio's error code, when the failure came from Twilio.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        // A fenced call waits for the next term, not for a retry.
        !matches!(self, Error::Fenced { .. })
            && matches!(self.class(), ErrorClass::RateLimited | ErrorClass::Transient)
    }

    /// Whether Twilio surely did not act on the request, so even a create may be sent again.
    pub fn surely_unprocessed(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Fenced { .. })
            || self.class() == ErrorClass::RateLimited
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<i64>) -> Error {
        Error::Api {
            operation: "op",
            status,
            code,
            message: "m".into(),
            more_info: None,
            retry_after: None,
        }
    }

    #[test]
    fn classifies_like_the_notes_say() {
        assert_eq!(api(401, Some(20003)).class(), ErrorClass::Credentials);
        assert_eq!(api(404, Some(20404)).class(), ErrorClass::NotFound);
        assert_eq!(api(429, Some(20429)).class(), ErrorClass::RateLimited);
        assert_eq!(api(503, None).class(), ErrorClass::Transient);
        assert_eq!(api(400, Some(21479)).class(), ErrorClass::Permanent);
        assert_eq!(
            Error::Transport {
                operation: "op",
                detail: "reset".into()
            }
            .class(),
            ErrorClass::Transient
        );
        assert!(api(429, None).is_retryable() && !api(400, Some(21479)).is_retryable());
        assert_eq!(
            api(400, Some(21479)).to_string(),
            "Twilio op returned HTTP 400 code 21479: m"
        );
    }
}

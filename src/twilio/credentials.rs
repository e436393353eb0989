//! Credentials the operator acts with, as Twilio's SDKs read them from an environment or a
//! Secret: `TWILIO_ACCOUNT_SID` with `TWILIO_AUTH_TOKEN`, or `TWILIO_ACCOUNT_SID` with
//! `TWILIO_API_KEY` and `TWILIO_API_SECRET` of a Main key.
//!
//! Contract: secret halves are [`SecretString`]s, so `Debug` and logs show `[REDACTED]`; SIDs
//! are checked for shape before they are used, so a typo fails with the variable's name.

use secrecy::{ExposeSecret, SecretString};

pub const ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
pub const AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
pub const API_KEY: &str = "TWILIO_API_KEY";
pub const API_SECRET: &str = "TWILIO_API_SECRET";

/// An account SID plus the secret that authenticates for it.
#[derive(Clone, Debug)]
pub struct Credentials {
    account_sid: String,
    auth: Auth,
}

/// How the credentials authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// The account's auth token (primary or secondary).
    AuthToken(SecretString),
    /// An API key acting for the account.
    ApiKey {
        /// The key's SID.
        sid: String,
        /// The key's secret.
        secret: SecretString,
    },
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    /// A required setting is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A SID does not have its shape.
    #[error("{name} must be {prefix} followed by 32 hex digits")]
    BadSid {
        /// The setting at fault.
        name: &'static str,
        /// The SID prefix it needs.
        prefix: &'static str,
    },
    /// Neither an auth token nor a whole API key.
    #[error("set either {AUTH_TOKEN}, or {API_KEY} with {API_SECRET}; {0}")]
    Incomplete(&'static str),
}

/// Whether `text` is a SID: the prefix and 32 hex digits.
pub fn is_sid(prefix: &str, text: &str) -> bool {
    text.len() == 34 && text.starts_with(prefix) && text.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

impl Credentials {
    /// Credentials of `account_sid` with its auth token.
    pub fn with_auth_token(
        account_sid: impl Into<String>,
        token: SecretString,
    ) -> Result<Self, CredentialsError> {
        Self::checked(account_sid.into(), Auth::AuthToken(token))
    }

    /// Credentials of `account_sid` with one of its API keys.
    pub fn with_api_key(
        account_sid: impl Into<String>,
        key_sid: impl Into<String>,
        secret: SecretString,
    ) -> Result<Self, CredentialsError> {
        let sid = key_sid.into();
        if !is_sid("SK", &sid) {
            return Err(CredentialsError::BadSid {
                name: API_KEY,
                prefix: "SK",
            });
        }
        Self::checked(account_sid.into(), Auth::ApiKey { sid, secret })
    }

    fn checked(account_sid: String, auth: Auth) -> Result<Self, CredentialsError> {
        if !is_sid("AC", &account_sid) {
            return Err(CredentialsError::BadSid {
                name: ACCOUNT_SID,
                prefix: "AC",
            });
        }
        Ok(Self { account_sid, auth })
    }

    /// Reads the SDK variable names through `get`, which may look in an environment or in a
    /// Secret's data.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let non_empty = |name: &str| get(name).filter(|v| !v.is_empty());
        let account_sid = non_empty(ACCOUNT_SID).ok_or(CredentialsError::Missing(ACCOUNT_SID))?;
        match (non_empty(AUTH_TOKEN), non_empty(API_KEY), non_empty(API_SECRET)) {
            (Some(token), _, _) => Self::with_auth_token(account_sid, token.into()),
            (None, Some(key), Some(secret)) => Self::with_api_key(account_sid, key, secret.into()),
            (None, Some(_), None) => Err(CredentialsError::Incomplete("TWILIO_API_SECRET is missing")),
            (None, None, _) => Err(CredentialsError::Incomplete("neither is present")),
        }
    }

    /// The operator's own credentials, from its environment.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The account these credentials act for.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// How these credentials authenticate.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The Basic-auth user name: the account SID or the key SID.
    pub fn username(&self) -> &str {
        match &self.auth {
            Auth::AuthToken(_) => &self.account_sid,
            Auth::ApiKey { sid, .. } => sid,
        }
    }

    /// Names these exact credentials without revealing them: the account and a digest of the
    /// username and secret. What the client keeps per caller (concurrency slots, rate budget, key
    /// inventory) is keyed by it, so credentials that fail cannot touch what others rely on,
    /// even when they name the same account.
    pub fn identity(&self) -> String {
        let secret = format!("{}:{}", self.username(), self.password().expose_secret());
        format!("{}/{}", self.account_sid, crate::fingerprint::digest(&secret))
    }

    pub(crate) fn password(&self) -> &SecretString {
        match &self.auth {
            Auth::AuthToken(token) => token,
            Auth::ApiKey { secret, .. } => secret,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn reads_both_sdk_forms_and_redacts() {
        let token =
            Credentials::from_lookup(lookup(&[(ACCOUNT_SID, AC), (AUTH_TOKEN, "tok-secret")])).unwrap();
        assert_eq!(token.username(), AC);
        let key = Credentials::from_lookup(lookup(&[
            (ACCOUNT_SID, AC),
            (API_KEY, SK),
            (API_SECRET, "key-secret"),
        ]))
        .unwrap();
        assert_eq!((key.username(), key.account_sid()), (SK, AC));
        let debug = format!("{token:?} {key:?}");
        assert!(
            !debug.contains("tok-secret") && !debug.contains("key-secret"),
            "{debug}"
        );
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(
            Credentials::from_lookup(lookup(&[])).unwrap_err(),
            CredentialsError::Missing(ACCOUNT_SID)
        );
        assert_eq!(
            Credentials::from_lookup(lookup(&[(ACCOUNT_SID, "ACnope"), (AUTH_TOKEN, "x")])).unwrap_err(),
            CredentialsError::BadSid {
                name: ACCOUNT_SID,
                prefix: "AC"
            }
        );
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(ACCOUNT_SID, AC), (API_KEY, SK)])),
            Err(CredentialsError::Incomplete(_))
        ));
        assert!(matches!(
            Credentials::from_lookup(lookup(&[(ACCOUNT_SID, AC), (API_KEY, "SKx"), (API_SECRET, "s")])),
            Err(CredentialsError::BadSid { .. })
        ));
    }
}

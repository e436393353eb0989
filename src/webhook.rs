//! The endpoint Twilio's usage triggers call when a subaccount's spend crosses a budget
//! threshold: `POST /usage-triggers/{namespace}/{name}` on the webhook address. A call counts only
//! when its `X-Twilio-Signature` verifies with the auth token of a subaccount whose triggers call
//! that very object; anything else costs no Twilio call and changes nothing. A verified call wakes
//! its object, spaced as [`crate::budget::callbacks`] says. Nothing about a call is trusted beyond
//! what the signature proves: the object acts on the spend it reads from Twilio itself.

use crate::budget::callbacks::{Callbacks, Wake};
use crate::context::{Changed, Context};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use base64::Engine;
use hmac::{KeyInit, Mac};
use k8s_openapi::jiff::Timestamp;
use secrecy::ExposeSecret;
use std::sync::Arc;

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// The largest callback body accepted; Twilio's are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

/// `X-Twilio-Signature` of a call to `url` with form `params`, signed with `token`.
pub fn signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(token, url, params).finalize().into_bytes())
}

fn mac(token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Whether `given` is the signature `token` makes of a call to `url` with `params`, compared
/// in constant time.
pub fn verify(token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else {
        return false;
    };
    mac(token, url, params).verify_slice(&given).is_ok()
}

/// What the endpoint acts through.
#[derive(Clone)]
struct Endpoint {
    ctx: Arc<Context>,
    callbacks: Arc<Callbacks>,
}

/// The usage-trigger endpoint, acting through `ctx` and recording calls in `callbacks`.
///
/// A call counts only when it names (`AccountSid`) a subaccount whose budget triggers call the
/// path's object, and its `X-Twilio-Signature` is what Twilio computes with that subaccount's auth
/// token: HMAC-SHA1 over the exact URL the operator registered (its public base URL and the
/// request's path and query) followed by each form parameter's name and value, sorted by name,
/// base64-encoded. Anything else (unsigned, mis-signed, about another object, a body over 16 KiB)
/// is refused with 403 or 413. A process that does not lead, or has not read the token yet,
/// answers 503. A verified call wakes the object at most once per
/// [`crate::budget::reads::CALLBACK_SPACING`] (a call within it wakes the object once it has
/// passed), so a flood, even of replayed genuine calls, costs Twilio at most two reads a minute
/// per subaccount.
pub fn router(ctx: Arc<Context>, callbacks: Arc<Callbacks>) -> Router {
    Router::new()
        .route("/usage-triggers/{namespace}/{name}", post(callback))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Endpoint { ctx, callbacks })
}

async fn callback(
    State(Endpoint { ctx, callbacks }): State<Endpoint>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(base) = callbacks.base() else {
        return StatusCode::NOT_FOUND;
    };
    if !ctx.is_leading() {
        // A standby knows no tokens and runs no reconciler; Twilio may try again.
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let sid = params
        .iter()
        .find(|(k, _)| k == "AccountSid")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    // Only the object whose triggers call about this SID may be woken by it: a tenant signing
    // with its own subaccount's token cannot wake another's object.
    let object = callbacks.object_of(sid);
    if object.as_ref() != Some(&(namespace.clone(), name.clone())) {
        tracing::info!(
            ?namespace,
            ?name,
            ?sid,
            "refused a usage-trigger call about no budget of this object"
        );
        return StatusCode::FORBIDDEN;
    }
    let Some(token) = ctx.subaccount_token(sid) else {
        // Its token changed and is not read yet: the next pass reads it; Twilio may try again.
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let url = format!(
        "{base}{}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    if !verify(token.expose_secret(), &url, &params, given) {
        tracing::warn!(
            ?namespace,
            ?name,
            ?sid,
            "refused a usage-trigger call whose signature does not verify"
        );
        return StatusCode::FORBIDDEN;
    }
    let wake = Changed::Spend(namespace, name);
    match callbacks.arrived(sid, Timestamp::now()) {
        Wake::Now => {
            tracing::info!(?sid, "usage trigger called; reading spend again");
            let _ = ctx.cluster.changes.send(wake);
        }
        Wake::After(delay) => {
            let (ctx, callbacks, sid) = (ctx.clone(), callbacks.clone(), sid.to_owned());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                callbacks.woke_late(&sid, Timestamp::now());
                let _ = ctx.cluster.changes.send(wake);
            });
        }
        Wake::Pending => {}
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn signatures_follow_twilios_algorithm() {
        // The example of Twilio's webhook security guide; the value is what Twilio's Python SDK
        // (RequestValidator.compute_signature, twilio 9.13.0) computes for it.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let form = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let token = "12345";
        let signed = signature(token, url, &form);
        assert_eq!(signed, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        let mut shuffled = form.clone();
        shuffled.reverse();
        assert!(
            verify(token, url, &shuffled, &signed),
            "order of parameters does not matter"
        );
        assert!(!verify("54321", url, &form, &signed), "another token");
        assert!(
            !verify(token, "https://mycompany.com/other", &form, &signed),
            "another URL"
        );
        let mut forged = form.clone();
        forged[2].1 = "9999".into();
        assert!(!verify(token, url, &forged, &signed), "a changed parameter");
        assert!(!verify(token, url, &form, "not base64!"), "garbage");
        assert!(!verify(token, url, &form, ""), "empty");
    }
}

//! The transport under every Twilio call: hosts, Basic auth, form bodies, pagination, and per
//! caller (the exact credentials, [`Credentials::identity`]) a concurrency limit and an optional
//! requests-per-second budget: credentials that merely name an account share nothing with the
//! ones that authenticate for it. Retryable failures
//! (429/20429, 5xx, transport) are retried with exponential backoff and jitter, at most
//! `max_retries` times, honouring Retry-After; a create is repeated only when Twilio surely did not
//! act on it, so a retry never makes a second subaccount or key. Bodies are never logged.

use super::credentials::Credentials;
use super::error::Error;
use crate::fence::Fence;
use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Longest Retry-After the client will honour; longer ones are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Guard against a server that never ends its page chain.
const MAX_PAGES: usize = 10_000;

/// Base URLs of Twilio's four hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrls {
    /// The REST API host (v2010 accounts, keys, usage).
    pub api: String,
    /// The IAM host (restricted keys).
    pub iam: String,
    /// The Accounts host (auth tokens).
    pub accounts: String,
    /// The Voice host (dialing geo permissions).
    pub voice: String,
}

impl BaseUrls {
    /// Twilio's hosts, with region and edge chosen as the official SDKs do:
    /// `https://{product}[.{edge}][.{region}].twilio.com`, the region defaulting to us1 when
    /// only an edge is given.
    pub fn twilio(region: Option<&str>, edge: Option<&str>) -> Self {
        let region = region.or(edge.map(|_| "us1"));
        let host = |product: &str| {
            let parts: Vec<&str> = [Some(product), edge, region, Some("twilio.com")]
                .into_iter()
                .flatten()
                .collect();
            format!("https://{}", parts.join("."))
        };
        Self {
            api: host("api"),
            iam: host("iam"),
            accounts: host("accounts"),
            voice: host("voice"),
        }
    }

    /// One base URL for all four hosts (their paths do not overlap): for the emulator,
    /// proxies and tests.
    pub fn single(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            api: base.clone(),
            iam: base.clone(),
            accounts: base.clone(),
            voice: base,
        }
    }

    /// `TWILIO_BASE_URL` when set, otherwise Twilio's hosts for `TWILIO_REGION`/`TWILIO_EDGE`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match var("TWILIO_BASE_URL") {
            Some(base) => Self::single(&base),
            None => Self::twilio(var("TWILIO_REGION").as_deref(), var("TWILIO_EDGE").as_deref()),
        }
    }
}

/// Limits and retry policy.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where Twilio is.
    pub urls: BaseUrls,
    /// In-flight requests per account.
    pub max_concurrency: usize,
    /// Requests per second per account; `None` for no rate limit beyond concurrency.
    pub requests_per_second: Option<NonZeroU32>,
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first retry's delay.
    pub min_backoff: Duration,
    /// The longest delay between retries.
    pub max_backoff: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// PageSize asked of list operations (1..=1000); larger pages mean fewer calls.
    pub page_size: u32,
    /// Which replica sends, added to the User-Agent so Twilio's request logs tell replicas apart.
    pub instance: Option<String>,
}

impl ClientConfig {
    /// The defaults for `urls`.
    pub fn new(urls: BaseUrls) -> Self {
        Self {
            urls,
            max_concurrency: 8,
            requests_per_second: None,
            max_retries: 4,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            page_size: 1000,
            instance: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Host {
    Api,
    Iam,
    Accounts,
    Voice,
}

/// One Twilio operation, as the transport sends it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// Twilio's operationId, for logs and errors.
    pub operation: &'static str,
    pub method: Method,
    pub host: Host,
    /// Path, possibly with a query string (a next-page link).
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub form: Vec<(&'static str, String)>,
    /// Creates are not idempotent: repeated only when Twilio surely did not act.
    pub creates: bool,
}

impl Call {
    pub fn new(operation: &'static str, method: Method, host: Host, path: String) -> Self {
        Self {
            operation,
            method,
            host,
            path,
            query: Vec::new(),
            form: Vec::new(),
            creates: false,
        }
    }
    pub fn creating(mut self) -> Self {
        self.creates = true;
        self
    }
    pub fn query(mut self, name: &'static str, value: Option<impl Into<String>>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.into()));
        }
        self
    }
    pub fn form(mut self, name: &'static str, value: Option<impl Into<String>>) -> Self {
        if let Some(value) = value {
            self.form.push((name, value.into()));
        }
        self
    }
}

/// How many callers' slots are kept before the idle ones are dropped.
const MAX_IDLE_CALLERS: usize = 1024;

/// A Twilio REST client; cheap to clone, limits shared between clones.
#[derive(Clone)]
pub struct TwilioClient {
    inner: Arc<Inner>,
}

/// Told of every answer (operation, HTTP status, 0 for none), for metrics.
pub type Observer = Arc<dyn Fn(&'static str, u16) + Send + Sync>;

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    observer: Option<Observer>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    rate: Option<DefaultKeyedRateLimiter<String>>,
    /// Until when this process may call Twilio.
    fence: Fence,
}

impl TwilioClient {
    /// A client with `config`'s limits and retries.
    pub fn new(config: ClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .user_agent(match &config.instance {
                Some(instance) => format!("twilio-operator/{} ({instance})", env!("CARGO_PKG_VERSION")),
                None => format!("twilio-operator/{}", env!("CARGO_PKG_VERSION")),
            })
            .build()?;
        let rate = config
            .requests_per_second
            .map(|rps| RateLimiter::keyed(Quota::per_second(rps)));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                observer: None,
                slots: Mutex::default(),
                rate,
                fence: Fence::always_open(),
            }),
        })
    }

    /// How many requests it sends to one account at once.
    pub fn max_concurrency(&self) -> usize {
        self.inner.config.max_concurrency
    }

    /// The same client, telling `observer` of every answer.
    pub fn observed_by(mut self, observer: Observer) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.observer = Some(observer);
        }
        self
    }

    /// The same client, sending nothing once `fence` closes.
    pub fn fenced_by(mut self, fence: Fence) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.fence = fence;
        }
        self
    }

    fn observe(&self, operation: &'static str, status: u16) {
        if let Some(observer) = &self.inner.observer {
            observer(operation, status);
        }
    }

    /// The limits and retry policy in force.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn slot(&self, caller: &str) -> Arc<Semaphore> {
        let mut slots = self.inner.slots.lock().expect("slot map lock");
        if slots.len() >= MAX_IDLE_CALLERS {
            // Credentials come and go (a tenant may cycle bogus ones): an idle slot holds nothing.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            if let Some(rate) = &self.inner.rate {
                rate.retain_recent();
            }
        }
        slots
            .entry(caller.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.config.max_concurrency.max(1))))
            .clone()
    }

    fn base(&self, host: Host) -> &str {
        let urls = &self.inner.config.urls;
        match host {
            Host::Api => &urls.api,
            Host::Iam => &urls.iam,
            Host::Accounts => &urls.accounts,
            Host::Voice => &urls.voice,
        }
    }

    /// Sends `call`, retrying as the module contract says; returns the body of a 2xx.
    pub(crate) async fn send(&self, creds: &Credentials, call: &Call) -> Result<bytes::Bytes, Error> {
        let config = &self.inner.config;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.min_backoff)
            .with_max_delay(config.max_backoff)
            .with_max_times(config.max_retries)
            .with_jitter();
        (|| self.attempt(creds, call))
            .retry(backoff)
            .when(|e: &Error| e.is_retryable() && (!call.creates || e.surely_unprocessed()))
            .adjust(|e: &Error, delay| delay.map(|d| e.retry_after().map_or(d, |ra| ra.min(MAX_RETRY_AFTER))))
            .notify(|e: &Error, delay| tracing::info!(operation = call.operation, error = %e, ?delay, "retrying Twilio call"))
            .await
    }

    async fn attempt(&self, creds: &Credentials, call: &Call) -> Result<bytes::Bytes, Error> {
        let operation = call.operation;
        let caller = creds.identity();
        let slot = self.slot(&caller);
        let _permit = slot.acquire().await.expect("semaphores are never closed");
        if let Some(rate) = &self.inner.rate {
            rate.until_key_ready(&caller).await;
        }
        let url = format!("{}{}", self.base(call.host), call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), &url)
            .basic_auth(creds.username(), Some(creds.password().expose_secret()));
        if !call.query.is_empty() {
            request = request.query(&call.query);
        }
        if !call.form.is_empty() {
            request = request.form(&call.form);
        }
        // Checked last, after any wait for a slot: a replica that stopped leading meanwhile
        // sends nothing.
        if !self.inner.fence.is_open() {
            return Err(Error::Fenced { operation });
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| {
            self.observe(operation, 0);
            transport(operation, e)
        })?;
        let status = response.status().as_u16();
        self.observe(operation, status);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| transport(operation, e))?;
        tracing::debug!(
            operation,
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Twilio call"
        );
        if (200..300).contains(&status) {
            return Ok(body);
        }
        #[derive(serde::Deserialize, Default)]
        struct Body {
            code: Option<i64>,
            message: Option<String>,
            more_info: Option<String>,
        }
        let parsed: Body = serde_json::from_slice(&body).unwrap_or_default();
        Err(Error::Api {
            operation,
            status,
            code: parsed.code,
            message: parsed.message.unwrap_or_else(|| format!("HTTP {status}")),
            more_info: parsed.more_info,
            retry_after,
        })
    }

    /// Sends `call` and reads its JSON body.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        creds: &Credentials,
        call: &Call,
    ) -> Result<T, Error> {
        let body = self.send(creds, call).await?;
        decode(call.operation, &body)
    }

    /// Sends a delete; a resource already gone counts as deleted.
    pub(crate) async fn delete(&self, creds: &Credentials, call: &Call) -> Result<(), Error> {
        match self.send(creds, call).await {
            Ok(_) => Ok(()),
            Err(e) if e.class() == super::ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Follows a list to its end, through either of Twilio's envelopes: v2010's flat one
    /// (`next_page_uri`, relative) or the product APIs' `meta` one (`next_page_url`, absolute).
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        creds: &Credentials,
        first: Call,
        key: &str,
    ) -> Result<Vec<T>, Error> {
        let operation = first.operation;
        let mut call = first.query(
            "PageSize",
            Some(self.inner.config.page_size.clamp(1, 1000).to_string()),
        );
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: serde_json::Value = self.json(creds, &call).await?;
            let entries = page
                .get(key)
                .cloned()
                .unwrap_or(serde_json::Value::Array(Vec::new()));
            items.extend(decode_value::<Vec<T>>(operation, entries)?);
            let next = page
                .get("next_page_uri")
                .or_else(|| page.pointer("/meta/next_page_url"))
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty());
            let Some(next) = next else { return Ok(items) };
            call.path = path_of(next).ok_or_else(|| Error::Decode {
                operation,
                detail: format!("next page link {next:?} has no path"),
            })?;
            // The link carries the query (filters, PageSize, PageToken) itself.
            call.query.clear();
        }
        Err(Error::Decode {
            operation,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }
}

/// The path and query of a page link, relative or absolute; the host is always our own base,
/// so a configured proxy or emulator stays in the path of every page.
fn path_of(link: &str) -> Option<String> {
    if link.starts_with('/') {
        return Some(link.to_owned());
    }
    let rest = link.split_once("://")?.1;
    rest.find('/').map(|i| rest[i..].to_owned())
}

fn transport(operation: &'static str, error: reqwest::Error) -> Error {
    let connect = error.is_connect();
    let detail = error.without_url().to_string();
    if connect {
        Error::Connect { operation, detail }
    } else {
        Error::Transport { operation, detail }
    }
}

fn decode<T: DeserializeOwned>(operation: &'static str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        operation,
        detail: e.to_string(),
    })
}

fn decode_value<T: DeserializeOwned>(operation: &'static str, value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| Error::Decode {
        operation,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_and_edge_follow_the_sdks() {
        assert_eq!(BaseUrls::twilio(None, None).api, "https://api.twilio.com");
        assert_eq!(
            BaseUrls::twilio(Some("ie1"), None).iam,
            "https://iam.ie1.twilio.com"
        );
        assert_eq!(
            BaseUrls::twilio(Some("ie1"), Some("dublin")).accounts,
            "https://accounts.dublin.ie1.twilio.com"
        );
        assert_eq!(
            BaseUrls::twilio(None, Some("sydney")).api,
            "https://api.sydney.us1.twilio.com"
        );
        assert_eq!(
            BaseUrls::twilio(Some("ie1"), None).voice,
            "https://voice.ie1.twilio.com"
        );
        assert_eq!(BaseUrls::single("http://127.0.0.1:9/").iam, "http://127.0.0.1:9");
    }

    #[test]
    fn page_links_keep_our_host() {
        assert_eq!(
            path_of("/2010-04-01/Accounts.json?PageToken=PA1").as_deref(),
            Some("/2010-04-01/Accounts.json?PageToken=PA1")
        );
        assert_eq!(
            path_of("https://iam.twilio.com/v1/Keys?AccountSid=AC1&Page=1").as_deref(),
            Some("/v1/Keys?AccountSid=AC1&Page=1")
        );
        assert_eq!(path_of("nonsense"), None);
    }
}

//! twilio-emulator: a stateful, in-memory stand-in for the Twilio REST APIs twilio-operator uses
//! (api v2010 Accounts, Keys, Balance and Usage; iam v1 Keys; accounts v1 AuthTokens), all on one
//! listener. It answers as Twilio does (status codes, error bodies, pagination, SID and date
//! formats, auth and scope rules, the account status machine), injects the faults it is told to,
//! counts every call, and, given Twilio's OpenAPI files, records every departure from them. Its own
//! controls live under `/_emulator/`, a prefix Twilio does not have.

pub mod admin;
pub mod contract;
pub mod faults;
pub mod http;
pub mod ids;
pub mod routes;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

/// Shared state of a running emulator.
pub struct App {
    pub world: Mutex<world::World>,
    pub knobs: RwLock<faults::Knobs>,
    pub contract: Option<contract::Contract>,
    pub stats: Mutex<Stats>,
    inflight: Mutex<HashMap<String, usize>>,
    /// Answers to the trigger callbacks made: HTTP status (0: no answer) -> count.
    pub callbacks: Arc<Mutex<BTreeMap<u16, u64>>>,
    http: reqwest::Client,
}

/// Call counters and contract violations, for tests and benchmarks.
#[derive(Debug, Default, serde::Serialize)]
pub struct Stats {
    /// operation -> requests received, counted on arrival.
    pub received: BTreeMap<String, u64>,
    /// operation -> HTTP status answered (0 for a reset connection) -> count.
    pub calls: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Departures from Twilio's OpenAPI files, in arrival order (the first 1000).
    pub violations: Vec<String>,
    /// Every routed request in arrival order (the first [`REQUEST_LOG_LIMIT`]), so a test can
    /// tell which client called when.
    pub requests: Vec<Arrival>,
}

/// How many requests the request log keeps.
pub const REQUEST_LOG_LIMIT: usize = 200_000;

/// One request as it arrived.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Arrival {
    /// Milliseconds since the Unix epoch, on arrival.
    pub at_ms: u64,
    /// The operation, as the call counters name it.
    pub operation: String,
    /// The request's path.
    pub path: String,
    /// The client's User-Agent.
    pub user_agent: String,
}

impl App {
    pub fn new(knobs: faults::Knobs, rules: world::Rules, contract: Option<contract::Contract>) -> Self {
        let mut world = world::World::default();
        world.rules = rules;
        Self {
            world: Mutex::new(world),
            knobs: RwLock::new(knobs),
            contract,
            stats: Mutex::default(),
            inflight: Mutex::default(),
            callbacks: Arc::default(),
            http: reqwest::Client::new(),
        }
    }

    /// Makes trigger callbacks in the background, as Twilio does, counting their answers.
    pub fn deliver(&self, calls: Vec<world::Callback>) {
        for call in calls {
            let (http, answers) = (self.http.clone(), self.callbacks.clone());
            tokio::spawn(async move {
                let request = if call.method.eq_ignore_ascii_case("GET") {
                    http.get(&call.url).query(&call.params)
                } else {
                    http.post(&call.url).form(&call.params)
                };
                let status = request
                    .header("X-Twilio-Signature", &call.signature)
                    .header("User-Agent", "TwilioProxy/1.1")
                    .timeout(std::time::Duration::from_secs(15))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                tracing::info!(url = %call.url, status, "trigger callback");
                *answers.lock().expect("callbacks").entry(status).or_default() += 1;
            });
        }
    }

    fn arrived(&self, operation: &str, path: &str, user_agent: &str) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut stats = self.stats.lock().expect("stats");
        *stats.received.entry(operation.to_owned()).or_default() += 1;
        if stats.requests.len() < REQUEST_LOG_LIMIT {
            stats.requests.push(Arrival {
                at_ms,
                operation: operation.to_owned(),
                path: path.to_owned(),
                user_agent: user_agent.to_owned(),
            });
        }
    }

    fn count(&self, operation: &str, status: u16) {
        let mut stats = self.stats.lock().expect("stats");
        *stats
            .calls
            .entry(operation.to_owned())
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    fn violations(&self, problems: Vec<String>) {
        if problems.is_empty() {
            return;
        }
        for problem in &problems {
            tracing::warn!(%problem, "contract violation");
        }
        let mut stats = self.stats.lock().expect("stats");
        let room = 1000usize.saturating_sub(stats.violations.len());
        stats.violations.extend(problems.into_iter().take(room));
    }

    /// Takes an in-flight slot for `account`, or `None` when its concurrency limit is reached.
    fn enter(&self, account: &str) -> Option<InFlight<'_>> {
        let limit = self.knobs.read().expect("knobs").concurrency_limit;
        let mut inflight = self.inflight.lock().expect("inflight");
        let n = inflight.entry(account.to_owned()).or_default();
        if limit.is_some_and(|limit| *n >= limit) {
            return None;
        }
        *n += 1;
        Some(InFlight {
            app: self,
            account: account.to_owned(),
        })
    }
}

struct InFlight<'a> {
    app: &'a App,
    account: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.app.inflight.lock().expect("inflight").get_mut(&self.account) {
            *n -= 1;
        }
    }
}

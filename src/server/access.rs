//! Who may read `/metrics`: a caller whose bearer token the apiserver authenticates
//! (TokenReview) and whose user a SubjectAccessReview allows `get` on the non-resource URL
//! `/metrics`, as Kubernetes' own components and kube-rbac-proxy serve metrics. The series name
//! every namespace's objects (and a subaccount's month-to-date spend), so a pod in a tenant
//! namespace must not read them unauthenticated.
//!
//! Decisions are cached by a digest of the token (allowed for a minute, refused for ten
//! seconds), and the reviews a flood of unknown tokens could cause are rate-limited, so a
//! tenant's pod cannot turn scrapes into apiserver load.

use crate::fingerprint::digest;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an allowed token is trusted without asking again.
const ALLOWED_FOR: Duration = Duration::from_secs(60);
/// How long a refused token is refused without asking again.
const REFUSED_FOR: Duration = Duration::from_secs(10);
/// Decisions kept at most; past that, expired ones are dropped, then nothing new is kept.
const MAX_DECISIONS: usize = 1024;
/// Reviews asked of the apiserver per second at most (and as a burst).
const REVIEWS_PER_SECOND: u32 = 5;

/// What the gate says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The caller may read the metrics.
    Allowed,
    /// No bearer token, or one the apiserver does not authenticate.
    Unauthenticated,
    /// An authenticated caller that may not `get /metrics`.
    Forbidden,
    /// Too many unknown tokens lately, or the apiserver could not answer: try again later.
    Unavailable,
}

/// What the gate remembers of a token.
enum Recalled {
    Fresh(Verdict),
    Expired(Verdict),
    Unknown,
}

/// The gate in front of `/metrics`.
pub struct MetricsAccess {
    client: kube::Client,
    decisions: Mutex<HashMap<String, (Instant, Verdict)>>,
    reviews: DefaultDirectRateLimiter,
}

impl MetricsAccess {
    /// A gate asking the apiserver `client` talks to.
    pub fn new(client: kube::Client) -> Self {
        let rate = NonZeroU32::new(REVIEWS_PER_SECOND).expect("non-zero");
        Self {
            client,
            decisions: Mutex::default(),
            reviews: RateLimiter::direct(Quota::per_second(rate)),
        }
    }

    /// Whether the caller presenting `authorization` (the header's value) may read `/metrics`.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(token) = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Verdict::Unauthenticated;
        };
        let id = digest(token);
        let known = match self.recall(&id) {
            Recalled::Fresh(verdict) => return verdict,
            Recalled::Expired(verdict) => verdict == Verdict::Allowed,
            Recalled::Unknown => false,
        };
        // A flood of unknown tokens waits its turn; a scraper allowed before is asked about
        // again at once, so the flood cannot lock it out.
        if !known && self.reviews.check().is_err() {
            return Verdict::Unavailable;
        }
        let verdict = match self.review(token).await {
            Ok(verdict) => verdict,
            Err(e) => {
                tracing::warn!(error = %e, "could not review a metrics caller's token");
                return Verdict::Unavailable;
            }
        };
        self.remember(id, verdict);
        verdict
    }

    fn recall(&self, id: &str) -> Recalled {
        let decisions = self.decisions.lock().expect("metrics decisions");
        let Some((at, verdict)) = decisions.get(id) else {
            return Recalled::Unknown;
        };
        let lasts = if *verdict == Verdict::Allowed {
            ALLOWED_FOR
        } else {
            REFUSED_FOR
        };
        if at.elapsed() < lasts {
            Recalled::Fresh(*verdict)
        } else {
            Recalled::Expired(*verdict)
        }
    }

    fn remember(&self, id: String, verdict: Verdict) {
        let mut decisions = self.decisions.lock().expect("metrics decisions");
        if decisions.len() >= MAX_DECISIONS {
            // Allowed callers are remembered longest: they skip the queue when asked again.
            decisions.retain(|_, (at, verdict)| *verdict == Verdict::Allowed || at.elapsed() < REFUSED_FOR);
        }
        if decisions.len() < MAX_DECISIONS {
            decisions.insert(id, (Instant::now(), verdict));
        }
    }

    /// Asks the apiserver who `token` is, then whether they may `get /metrics`.
    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let (true, Some(user)) = (status.authenticated == Some(true), status.user) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".to_owned()),
                    verb: Some("get".to_owned()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        let allowed = decided.status.is_some_and(|s| s.allowed);
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

//! What a TwilioSubaccount needs, decided from what was observed. Pure: no I/O, no clock. From
//! spec, status and what Twilio and the Secret showed: the spec validated ([`settings`]); whether to
//! use, recover or create the subaccount ([`existence`]); the update to ask for, never reopening a
//! closed account ([`account_update`]) and how to announce it ([`StatusChange`]); where the auth
//! token rotation stands, after an interruption at any step too ([`token_plan`]).

use crate::api::subaccount::{AuthTokenStatus, Budget, SubaccountState, TwilioSubaccount};
use crate::api::{SecretForm, schedule};
use crate::budget;
use crate::conditions::{Problem, Reason, duration_field};
use crate::secret::{Expect, Shape};
use crate::tagging;
use crate::template::{self, PLACEHOLDER_CREATED_AT, Template, Variables};
use crate::twilio::types::{Account, AccountStatus, AccountUpdate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use rust_decimal::Decimal;
use std::time::Duration;

/// The spec, validated, with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The object's namespace.
    pub namespace: String,
    /// The subaccount's friendly name as the spec wants it.
    pub display_name: String,
    /// The name a subaccount is created under: derived from the object's UID alone, so an
    /// interrupted create can be found again whatever the spec says by then.
    pub creation_name: String,
    /// The Secret the credentials are published in, if any.
    pub secret_name: Option<String>,
    /// `(every, gracePeriod)` of the auth token rotation, if it rotates.
    pub token_rotation: Option<(Duration, Duration)>,
    /// The object's name, a template variable.
    pub name: String,
    /// The Secret's type.
    pub secret_type: String,
    /// The Secret's template, checked, if it has one.
    pub template: Option<Template>,
    /// The budget and its monthly limit, if it has one.
    pub budget: Option<(Budget, Decimal)>,
}

/// The Secret's data keys without a template.
pub const ACCOUNT_SID_KEY: &str = "TWILIO_ACCOUNT_SID";
/// See [`ACCOUNT_SID_KEY`].
pub const AUTH_TOKEN_KEY: &str = "TWILIO_AUTH_TOKEN";

/// What a subaccount's values look like while a template is checked: as long as the real ones.
const PLACEHOLDER_ACCOUNT: &str = "AC00000000000000000000000000000000";
const PLACEHOLDER_TOKEN: &str = "00000000000000000000000000000000";

impl Settings {
    /// The variables a template sees for a subaccount.
    pub fn variables<'a>(&'a self, account: &'a str, token: &'a str, created_at: &'a str) -> Variables<'a> {
        Variables::new(vec![
            ("accountSid", account),
            ("authToken", token),
            ("friendlyName", &self.display_name),
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("createdAt", created_at),
        ])
    }

    /// The Secret's data, rendered if templated.
    pub fn data(
        &self,
        account: &str,
        token: &str,
        created_at: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, template::Invalid> {
        template::data(
            self.template.as_ref(),
            &self.variables(account, token, created_at),
            &[(ACCOUNT_SID_KEY, account), (AUTH_TOKEN_KEY, token)],
        )
    }

    /// What the Secret must hold to count as intact, given what each default key must hold.
    pub fn shape<'a>(&'a self, expected: &'a [(&'a str, Expect<'a>)]) -> Shape<'a> {
        Shape::of(self.template.as_ref(), expected)
    }
}

/// Validates `sub`'s spec.
pub fn settings(sub: &TwilioSubaccount) -> Result<Settings, Problem> {
    let namespace = sub.namespace().unwrap_or_default();
    let display_name = tagging::display_name(sub.spec.friendly_name.as_deref(), &namespace, &sub.name_any());
    let secret = sub.spec.secret.as_ref();
    let mut settings = Settings {
        creation_name: tagging::creation_name(&sub.uid().unwrap_or_default()),
        display_name,
        namespace,
        secret_name: secret.map(|s| s.name.clone()),
        token_rotation: None,
        name: sub.name_any(),
        secret_type: secret.map_or_else(|| SecretForm::default().type_, |s| s.form.type_.clone()),
        template: None,
        budget: budget::limit(sub.spec.budget.as_ref())?,
    };
    settings.token_rotation = match &sub.spec.auth_token_rotation {
        Some(r) => Some((
            duration_field("spec.authTokenRotation.every", &r.every)?,
            duration_field("spec.authTokenRotation.gracePeriod", &r.grace_period)?,
        )),
        None => None,
    };
    // Checked with placeholders before anything is asked of Twilio.
    if let Some(spec) = secret.and_then(|s| s.form.template.as_ref()) {
        let checked = Template::compile(
            spec,
            &settings.variables(PLACEHOLDER_ACCOUNT, PLACEHOLDER_TOKEN, PLACEHOLDER_CREATED_AT),
            &[
                (ACCOUNT_SID_KEY, PLACEHOLDER_ACCOUNT),
                (AUTH_TOKEN_KEY, PLACEHOLDER_TOKEN),
            ],
        )?;
        settings.template = Some(checked);
    }
    Ok(settings)
}

/// How the subaccount was found at Twilio.
#[derive(Debug, Clone)]
pub enum Found {
    /// `spec.sid` names it.
    Adopted(Account),
    /// `status.sid` records it.
    Recorded(Account),
    /// A create was announced and not recorded; this is what carries the creation name.
    Interrupted(Option<Account>),
    /// Nothing was ever created.
    Nothing,
}

/// What to do to have the subaccount.
#[derive(Debug, Clone)]
pub enum Existence {
    /// It exists and is recorded.
    Exists(Account),
    /// An interrupted create made it: record it, make no second one.
    Recover(Account),
    /// Create it.
    Create,
}

/// Decides from `found` how the object gets its subaccount; `parent` is the account whose
/// credentials the operator acts with.
pub fn existence(found: Found, parent: &str) -> Result<Existence, Problem> {
    match found {
        Found::Adopted(account)
            if account.sid == parent || account.owner_account_sid.as_deref() != Some(parent) =>
        {
            Err(Problem::new(
                Reason::NotASubaccount,
                format!(
                    "spec.sid {} is not a subaccount of {parent}, the account whose credentials the operator uses: only its subaccounts can be adopted",
                    account.sid
                ),
            ))
        }
        Found::Adopted(account) | Found::Recorded(account) => Ok(Existence::Exists(account)),
        Found::Interrupted(Some(account)) => Ok(Existence::Recover(account)),
        Found::Interrupted(None) | Found::Nothing => Ok(Existence::Create),
    }
}

/// The status to ask Twilio for, given the spec's state and the account's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    /// The account is as the spec wants it.
    Keep,
    /// Ask Twilio for this status.
    Set(AccountStatus),
    /// Closed at Twilio: irreversible, so nothing is asked for.
    Closed,
}

/// The status step from `desired` (spec) to `observed` (Twilio).
pub fn state_step(desired: SubaccountState, observed: AccountStatus) -> StateStep {
    let wanted = match desired {
        SubaccountState::Active => AccountStatus::Active,
        SubaccountState::Suspended => AccountStatus::Suspended,
    };
    match observed {
        AccountStatus::Closed => StateStep::Closed,
        s if s == wanted => StateStep::Keep,
        _ => StateStep::Set(wanted),
    }
}

/// The update that brings `account` to the spec, if one is needed; a closed account is a
/// problem no update can solve.
pub fn account_update(
    desired: SubaccountState,
    display_name: &str,
    account: &Account,
) -> Result<Option<AccountUpdate>, Problem> {
    let status = match state_step(desired, account.status.unwrap_or(AccountStatus::Unknown)) {
        StateStep::Closed => {
            return Err(Problem::new(
                Reason::SubaccountClosed,
                format!(
                    "Subaccount {} is closed at Twilio, which cannot be undone; delete this object, and create a new TwilioSubaccount for a new subaccount",
                    account.sid
                ),
            ));
        }
        StateStep::Set(s) => Some(s),
        StateStep::Keep => None,
    };
    let friendly_name =
        (account.friendly_name.as_deref() != Some(display_name)).then(|| display_name.to_owned());
    Ok(
        (friendly_name.is_some() || status.is_some()).then_some(AccountUpdate {
            friendly_name,
            status,
        }),
    )
}

/// A change of the subaccount's status at Twilio that a pass made, to announce.
pub struct StatusChange<'a> {
    /// The subaccount.
    pub sid: &'a str,
    /// Its status before.
    pub was: AccountStatus,
    /// Its status now.
    pub now: AccountStatus,
    /// Whether the budget suspends it.
    pub by_budget: bool,
    /// What spec.state says.
    pub spec: SubaccountState,
    /// Whether the last pass recorded a budget suspension.
    pub budget_lifted: bool,
    /// Whether the spec changed since the last pass, so the change is the spec's, not drift.
    pub spec_changed: bool,
}

impl StatusChange<'_> {
    /// The event announcing the change: its type, reason and note, naming the cause.
    pub fn announcement(&self) -> (EventType, &'static str, String) {
        let sid = self.sid;
        match self.now {
            AccountStatus::Suspended if self.by_budget && self.spec == SubaccountState::Active => (
                EventType::Warning,
                "BudgetSuspended",
                format!(
                    "Suspended subaccount {sid} at Twilio: its spend reached spec.budget.monthly and spec.budget.action is Suspend"
                ),
            ),
            AccountStatus::Active if self.budget_lifted => (
                EventType::Normal,
                "BudgetReactivated",
                format!(
                    "Reactivated subaccount {sid}: its spend is below spec.budget.monthly again (a new month, or a higher limit)"
                ),
            ),
            now => {
                let (type_, reason) = if self.spec_changed {
                    (EventType::Normal, "StatusChanged")
                } else {
                    (EventType::Warning, "StatusDrift")
                };
                let note = format!(
                    "Subaccount {sid} was {} at Twilio; set to {} as spec.state says",
                    self.was.as_str(),
                    now.as_str()
                );
                (type_, reason, note)
            }
        }
    }
}

/// The next step of the secondary-token rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStep {
    /// Create a secondary token and publish it.
    Start,
    /// The grace period is over: promote the published secondary.
    Promote,
    /// Nothing to do before this moment.
    WaitUntil(Timestamp),
}

/// Where a rotation recorded in `record` stands at `now`.
pub fn token_step(record: &AuthTokenStatus, every: Duration, grace: Duration, now: Timestamp) -> TokenStep {
    let (due, step) = match &record.secondary_published_at {
        Some(published) => (schedule::after(published.0, grace), TokenStep::Promote),
        None => (schedule::after(record.rotated_at.0, every), TokenStep::Start),
    };
    if now >= due {
        step
    } else {
        TokenStep::WaitUntil(due)
    }
}

/// What to do about the published auth token in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// The Secret holds the token it should.
    Keep,
    /// Publish the primary token (the Secret is new, edited or stale).
    WritePrimary,
    /// Create a secondary token and publish it.
    Start,
    /// Promote the published secondary.
    Promote,
}

/// The rotation record, as far as the Secret proves it, and the step to take.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPlan {
    /// The rotation record to act from; `None` when the token does not rotate.
    pub record: Option<AuthTokenStatus>,
    /// The step.
    pub action: TokenAction,
}

/// Whether the token the Secret holds must be tried at Twilio: the token rotates, no secondary
/// is recorded, and the Secret holds intact a token that is not the primary. It is either a
/// secondary published just before an interruption (it authenticates) or a stale one.
pub fn probe_held_token(
    rotates: bool,
    record: Option<&AuthTokenStatus>,
    holds_primary: bool,
    intact: bool,
) -> bool {
    rotates && intact && !holds_primary && record.is_none_or(|r| r.secondary_published_at.is_none())
}

/// The token step for this pass. `holds_primary` says the Secret holds Twilio's primary token,
/// `intact` that it holds what the operator wrote; `held_secondary` is when the Secret's other
/// token was published, if it was shown to be a working secondary.
pub fn token_plan(
    rotation: Option<(Duration, Duration)>,
    record: Option<&AuthTokenStatus>,
    (holds_primary, intact): (bool, bool),
    held_secondary: Option<Timestamp>,
    now: Timestamp,
) -> TokenPlan {
    let Some((every, grace)) = rotation else {
        let action = if holds_primary {
            TokenAction::Keep
        } else {
            TokenAction::WritePrimary
        };
        return TokenPlan { record: None, action };
    };
    let mut token = record.cloned().unwrap_or(AuthTokenStatus {
        rotated_at: Time(now),
        secondary_published_at: None,
        next_rotation_at: None,
    });
    if token.secondary_published_at.is_some() && holds_primary {
        // Promoted, and stopped before recording it.
        token.rotated_at = Time(now);
        token.secondary_published_at = None;
    }
    if token.secondary_published_at.is_none()
        && let Some(published) = held_secondary
    {
        token.secondary_published_at = Some(Time(published));
    }
    if token.secondary_published_at.is_some() && !holds_primary && !intact {
        // The published secondary is lost (the Secret was deleted or edited) and Twilio shows a
        // secondary only when it is made: start over with a fresh one, published at once.
        return TokenPlan {
            record: Some(token),
            action: TokenAction::Start,
        };
    }
    let action = match token_step(&token, every, grace, now) {
        TokenStep::Start => TokenAction::Start,
        TokenStep::Promote => TokenAction::Promote,
        TokenStep::WaitUntil(_) if token.secondary_published_at.is_none() && !holds_primary => {
            TokenAction::WritePrimary
        }
        TokenStep::WaitUntil(_) => TokenAction::Keep,
    };
    TokenPlan {
        record: Some(token),
        action,
    }
}

/// The rotation record after `action` succeeded at `now`, and when the rotation needs
/// attention next.
pub fn token_stepped(
    mut token: AuthTokenStatus,
    action: TokenAction,
    (every, grace): (Duration, Duration),
    now: Timestamp,
) -> (AuthTokenStatus, Timestamp) {
    match action {
        TokenAction::Start => token.secondary_published_at = Some(Time(now)),
        TokenAction::Promote => {
            token.rotated_at = Time(now);
            token.secondary_published_at = None;
        }
        TokenAction::Keep | TokenAction::WritePrimary => {}
    }
    token.next_rotation_at = Some(Time(schedule::after(token.rotated_at.0, every)));
    let next = match token_step(&token, every, grace, now) {
        TokenStep::WaitUntil(t) => t,
        _ => now,
    };
    (token, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const DAY: Duration = Duration::from_secs(86_400);
    const HOUR: Duration = Duration::from_secs(3600);
    const T0: &str = "2026-01-01T00:00:00Z";

    fn account(sid: &str, owner: &str, status: AccountStatus, name: &str) -> Account {
        serde_json::from_value(serde_json::json!({
            "sid": sid, "owner_account_sid": owner, "status": status.as_str(), "friendly_name": name,
        }))
        .unwrap()
    }

    #[test]
    fn existence_adopts_only_subaccounts_and_never_creates_twice() {
        let child = account("AC2", "AC1", AccountStatus::Active, "n");
        assert!(matches!(
            existence(Found::Adopted(child.clone()), "AC1"),
            Ok(Existence::Exists(_))
        ));
        let foreign = account("AC3", "AC9", AccountStatus::Active, "n");
        let refused = existence(Found::Adopted(foreign), "AC1").unwrap_err();
        assert_eq!(refused.reason, Reason::NotASubaccount);
        let parent = account("AC1", "AC1", AccountStatus::Active, "n");
        assert!(
            existence(Found::Adopted(parent), "AC1").is_err(),
            "the parent itself"
        );
        assert!(matches!(
            existence(Found::Recorded(child.clone()), "AC1"),
            Ok(Existence::Exists(_))
        ));
        // Crash after Twilio's create, before the SID was recorded: found by its creation name.
        assert!(matches!(
            existence(Found::Interrupted(Some(child)), "AC1"),
            Ok(Existence::Recover(_))
        ));
        // Crash after the intent, before Twilio acted: nothing was made.
        assert!(matches!(
            existence(Found::Interrupted(None), "AC1"),
            Ok(Existence::Create)
        ));
        assert!(matches!(existence(Found::Nothing, "AC1"), Ok(Existence::Create)));
    }

    #[test]
    fn closed_is_never_reopened() {
        assert_eq!(
            state_step(SubaccountState::Active, AccountStatus::Closed),
            StateStep::Closed
        );
        assert_eq!(
            state_step(SubaccountState::Active, AccountStatus::Suspended),
            StateStep::Set(AccountStatus::Active)
        );
        assert_eq!(
            state_step(SubaccountState::Suspended, AccountStatus::Active),
            StateStep::Set(AccountStatus::Suspended)
        );
        assert_eq!(
            state_step(SubaccountState::Suspended, AccountStatus::Suspended),
            StateStep::Keep
        );
        let closed = account("AC2", "AC1", AccountStatus::Closed, "n");
        assert_eq!(
            account_update(SubaccountState::Active, "n", &closed)
                .unwrap_err()
                .reason,
            Reason::SubaccountClosed
        );
    }

    #[test]
    fn updates_rename_and_restore_the_state() {
        let active = account("AC2", "AC1", AccountStatus::Active, "team-a");
        assert_eq!(
            account_update(SubaccountState::Active, "team-a", &active).unwrap(),
            None
        );
        let renamed = account_update(SubaccountState::Active, "team-b", &active)
            .unwrap()
            .unwrap();
        assert_eq!(
            (renamed.friendly_name.as_deref(), renamed.status),
            (Some("team-b"), None)
        );
        let suspended = account("AC2", "AC1", AccountStatus::Suspended, "team-a");
        let restored = account_update(SubaccountState::Active, "team-a", &suspended)
            .unwrap()
            .unwrap();
        assert_eq!(
            (restored.friendly_name, restored.status),
            (None, Some(AccountStatus::Active))
        );
    }

    #[test]
    fn token_rotation_walks_start_wait_promote() {
        let idle = AuthTokenStatus {
            rotated_at: Time(at(T0)),
            secondary_published_at: None,
            next_rotation_at: None,
        };
        assert_eq!(
            token_step(&idle, DAY, HOUR, at("2026-01-01T12:00:00Z")),
            TokenStep::WaitUntil(at("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            token_step(&idle, DAY, HOUR, at("2026-01-02T00:00:00Z")),
            TokenStep::Start
        );
        let pending = AuthTokenStatus {
            secondary_published_at: Some(Time(at("2026-01-02T00:00:00Z"))),
            ..idle
        };
        assert_eq!(
            token_step(&pending, DAY, HOUR, at("2026-01-02T00:30:00Z")),
            TokenStep::WaitUntil(at("2026-01-02T01:00:00Z"))
        );
        assert_eq!(
            token_step(&pending, DAY, HOUR, at("2026-01-02T01:00:00Z")),
            TokenStep::Promote
        );
    }

    #[test]
    fn token_plans_for_every_step_and_interruption() {
        let idle = AuthTokenStatus {
            rotated_at: Time(at(T0)),
            secondary_published_at: None,
            next_rotation_at: None,
        };
        let published = AuthTokenStatus {
            secondary_published_at: Some(Time(at("2026-01-02T00:00:00Z"))),
            ..idle.clone()
        };
        use TokenAction::{Keep, Promote, Start, WritePrimary};
        // The action, and whether a secondary is recorded afterwards.
        let check = |name: &str,
                     rotation: Option<(Duration, Duration)>,
                     record: Option<&AuthTokenStatus>,
                     (holds_primary, held): (bool, Option<&str>),
                     now: &str,
                     want: (TokenAction, bool)| {
            let p = token_plan(rotation, record, (holds_primary, true), held.map(at), at(now));
            let secondary = p
                .record
                .as_ref()
                .is_some_and(|r| r.secondary_published_at.is_some());
            assert_eq!((p.action, secondary), want, "{name}");
        };
        let rot = Some((DAY, HOUR));
        check(
            "no rotation, Secret fine",
            None,
            None,
            (true, None),
            T0,
            (Keep, false),
        );
        check(
            "no rotation, Secret missing",
            None,
            None,
            (false, None),
            T0,
            (WritePrimary, false),
        );
        check("first pass", rot, None, (false, None), T0, (WritePrimary, false));
        check(
            "waiting",
            rot,
            Some(&idle),
            (true, None),
            "2026-01-01T12:00:00Z",
            (Keep, false),
        );
        check(
            "due",
            rot,
            Some(&idle),
            (true, None),
            "2026-01-02T00:00:00Z",
            (Start, false),
        );
        check(
            "grace running",
            rot,
            Some(&published),
            (false, None),
            "2026-01-02T00:30:00Z",
            (Keep, true),
        );
        check(
            "grace over",
            rot,
            Some(&published),
            (false, None),
            "2026-01-02T01:00:00Z",
            (Promote, true),
        );
        // Crash after publishing the secondary, before recording it: the Secret's token works.
        let unrecorded = (false, Some("2026-01-02T00:00:00Z"));
        check(
            "secondary unrecorded",
            rot,
            Some(&idle),
            unrecorded,
            "2026-01-02T00:30:00Z",
            (Keep, true),
        );
        // Crash after promoting, before recording it: the Secret holds the (new) primary.
        check(
            "promotion unrecorded",
            rot,
            Some(&published),
            (true, None),
            "2026-01-02T01:00:00Z",
            (Keep, false),
        );
        // A stale token in the Secret that no longer works: the primary is published again.
        check(
            "stale Secret",
            rot,
            Some(&idle),
            (false, None),
            "2026-01-01T12:00:00Z",
            (WritePrimary, false),
        );
        // The Secret holding the published secondary was deleted: start over at once.
        let lost = token_plan(
            Some((DAY, HOUR)),
            Some(&published),
            (false, false),
            None,
            at("2026-01-02T00:30:00Z"),
        );
        assert_eq!(lost.action, TokenAction::Start);
        assert!(probe_held_token(true, Some(&idle), false, true));
        assert!(
            !probe_held_token(true, Some(&published), false, true),
            "a recorded secondary is not probed"
        );
        assert!(
            !probe_held_token(true, Some(&idle), true, true) && !probe_held_token(false, None, false, true)
        );
        assert!(
            !probe_held_token(true, None, false, false),
            "an edited Secret is not a record"
        );
    }

    #[test]
    fn a_step_moves_the_record_and_the_deadline() {
        let idle = AuthTokenStatus {
            rotated_at: Time(at(T0)),
            secondary_published_at: None,
            next_rotation_at: None,
        };
        let now = at("2026-01-02T00:00:00Z");
        let (started, next) = token_stepped(idle.clone(), TokenAction::Start, (DAY, HOUR), now);
        assert_eq!(started.secondary_published_at, Some(Time(now)));
        assert_eq!(
            next,
            at("2026-01-02T01:00:00Z"),
            "promotion is due after the grace period"
        );
        let later = at("2026-01-02T01:00:00Z");
        let (promoted, next) = token_stepped(started, TokenAction::Promote, (DAY, HOUR), later);
        assert_eq!(
            (
                promoted.rotated_at.clone(),
                promoted.secondary_published_at.clone()
            ),
            (Time(later), None)
        );
        assert_eq!(promoted.next_rotation_at, Some(Time(at("2026-01-03T01:00:00Z"))));
        assert_eq!(next, at("2026-01-03T01:00:00Z"));
    }
}

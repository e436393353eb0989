//! `kubectl twilio`: the operator's day-2 commands, as a kubectl plugin (kubectl runs any
//! `kubectl-twilio` on PATH).
//!
//! - `status`: why keys or subaccounts are or are not Ready, the key in use, what retires when,
//!   the next rotation, the budget and the voice dialing permissions. Needs get (or list, with -l) on the objects.
//! - `rotate`: one rotation of each key named or selected, through the rotate annotation. Needs
//!   patch on twilioapikeys (and list, with -l), nothing else.
//! - `policy`: which TwilioAccounts admit a namespace, and what they allow there. Needs get on
//!   the namespace and list on twilioaccounts.

use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config, ResourceExt};
use std::fmt::Write as _;
use twilio_operator::api::{TwilioAccount, TwilioApiKey, TwilioSubaccount};
use twilio_operator::tenancy;

#[derive(Parser)]
#[command(name = "kubectl twilio", about = "Day-2 commands for twilio-operator objects")]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Why objects are or are not Ready, their keys and what happens next.
    Status {
        /// Object names.
        names: Vec<String>,
        /// A label selector instead of names.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// The kind of the objects.
        #[arg(long, value_enum, default_value_t = Kind::Key)]
        kind: Kind,
    },
    /// Rotates the named or selected TwilioApiKeys once, now.
    Rotate {
        /// Key names.
        names: Vec<String>,
        /// A label selector instead of names.
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Which TwilioAccounts admit a namespace and what they allow it.
    Policy {
        /// The namespace (default: -n, or the context's).
        namespace: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Key,
    Subaccount,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    // In-cluster only when no kubeconfig is there at all: a broken one (a misspelt --context)
    // must fail, never act on whatever cluster the pod runs in.
    let has_kubeconfig = std::env::var_os("KUBECONFIG").is_some()
        || std::env::home_dir().is_some_and(|home| home.join(".kube/config").exists());
    let config = if has_kubeconfig || cli.context.is_some() {
        Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("the kubeconfig is not usable: {e}"))?
    } else {
        Config::incluster().map_err(|e| format!("no kubeconfig, and not in a cluster: {e}"))?
    };
    let namespace = cli.namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let now = Timestamp::now();
    match cli.command {
        Command::Status {
            names,
            selector,
            kind: Kind::Key,
        } => {
            let api: Api<TwilioApiKey> = Api::namespaced(client.clone(), &namespace);
            let subs: Api<TwilioSubaccount> = Api::namespaced(client, &namespace);
            for key in objects(&api, &names, selector.as_deref()).await? {
                let sub = match key.spec.subaccount_ref.as_ref() {
                    Some(r) => subs.get_opt(&r.name).await.ok().flatten(),
                    None => None,
                };
                print!("{}", describe_key(&key, sub.as_ref(), now));
            }
        }
        Command::Status {
            names,
            selector,
            kind: Kind::Subaccount,
        } => {
            let api: Api<TwilioSubaccount> = Api::namespaced(client, &namespace);
            for sub in objects(&api, &names, selector.as_deref()).await? {
                print!("{}", describe_subaccount(&sub, now));
            }
        }
        Command::Rotate { names, selector } => {
            let api: Api<TwilioApiKey> = Api::namespaced(client, &namespace);
            let names = match selector {
                Some(s) => objects(&api, &names, Some(&s))
                    .await?
                    .iter()
                    .map(|k| k.name_any())
                    .collect(),
                None if names.is_empty() => {
                    return Err("name the keys to rotate, or select them with -l".into());
                }
                None => names,
            };
            // A value never used before asks for exactly one rotation; the time also says when.
            let value = now.to_string();
            let patch =
                serde_json::json!({"metadata": {"annotations": {"twilio.operator.dev/rotate": value}}});
            for name in names {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("TwilioApiKey {namespace}/{name}: {e}"))?;
                println!("twilioapikey/{name} rotation requested ({value})");
            }
        }
        Command::Policy { namespace: asked } => {
            let namespace = asked.unwrap_or(namespace);
            let ns = Api::<Namespace>::all(client.clone())
                .get(&namespace)
                .await
                .map_err(|e| format!("namespace {namespace}: {e}"))?;
            let accounts = Api::<TwilioAccount>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(|e| {
                    format!("listing TwilioAccounts (a cluster admin can grant list on them): {e}")
                })?;
            print!(
                "{}",
                describe_policy(&namespace, &ns.labels().clone(), &accounts.items)
            );
        }
    }
    Ok(())
}

/// The objects named, or selected by `selector`.
async fn objects<K>(api: &Api<K>, names: &[String], selector: Option<&str>) -> Result<Vec<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match (selector, names) {
        (Some(s), []) => {
            let list = api
                .list(&ListParams::default().labels(s))
                .await
                .map_err(|e| e.to_string())?;
            if list.items.is_empty() {
                return Err(format!("no object matches -l {s}"));
            }
            Ok(list.items)
        }
        (Some(_), _) => Err("give names or -l, not both".into()),
        (None, []) => Err("name the objects, or select them with -l".into()),
        (None, names) => {
            let mut found = Vec::new();
            for name in names {
                found.push(api.get(name).await.map_err(|e| format!("{name}: {e}"))?);
            }
            Ok(found)
        }
    }
}

/// When `t` is, from `now`: "2026-12-07T10:00:00Z (in 3h 5m)".
fn when(t: &Time, now: Timestamp) -> String {
    let left = t.0.duration_since(now).as_secs();
    let span = span(left.abs());
    if left < 0 {
        format!("{} ({span} ago)", t.0)
    } else {
        format!("{} (in {span})", t.0)
    }
}

/// `secs` in the two largest units a person reads: "29d 23h", "3h 5m", "12m".
fn span(secs: i64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (days, hours) {
        (0, 0) if minutes == 0 => "under a minute".into(),
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The Ready verdict and, when not Ready, why and whether a person is needed; `judged` is the
/// generation the verdict is for and `latest` the object's.
fn verdict(out: &mut String, conditions: &[Condition], judged: Option<i64>, latest: Option<i64>) {
    if let (Some(judged), Some(latest)) = (judged, latest)
        && judged != latest
    {
        let _ = writeln!(
            out,
            "  Note:           generation {latest} is not judged yet; what follows is for generation {judged}"
        );
    }
    let find = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(ready) if ready.status == "True" => {
            let _ = writeln!(out, "  Ready:          True: {}", ready.message);
        }
        Some(ready) => {
            let _ = writeln!(
                out,
                "  Ready:          False ({}): {}",
                ready.reason, ready.message
            );
            if find("Stalled").is_some() {
                let _ = writeln!(out, "  Needs:          a person; the message says what to change");
            } else if find("Reconciling").is_some() {
                let _ = writeln!(out, "  Needs:          nothing; the operator is on its way");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "  Ready:          not judged yet; the operator has not reconciled it"
            );
        }
    }
}

fn describe_key(key: &TwilioApiKey, sub: Option<&TwilioSubaccount>, now: Timestamp) -> String {
    let mut out = format!(
        "TwilioApiKey {}/{}\n",
        key.namespace().unwrap_or_default(),
        key.name_any()
    );
    let st = key.status.clone().unwrap_or_default();
    verdict(
        &mut out,
        &st.conditions,
        st.observed_generation,
        key.metadata.generation,
    );
    if let Some(sid) = &st.key_sid {
        let created = st
            .key_created_at
            .as_ref()
            .map(|t| format!(", created {}", when(t, now)));
        let secret = st.secret_name.as_deref().unwrap_or("?");
        let _ = writeln!(
            out,
            "  Key in use:     {sid} in Secret {secret}{}",
            created.unwrap_or_default()
        );
    }
    for retiring in &st.retiring_keys {
        let _ = writeln!(
            out,
            "  Retiring:       {} revoked at {}",
            retiring.sid,
            when(&retiring.revoke_at, now)
        );
    }
    match (&st.next_rotation_at, &key.spec.rotation) {
        (Some(next), _) => {
            let _ = writeln!(out, "  Next rotation:  {}", when(next, now));
            if let Some(window) = &st.rotation_window {
                let _ = writeln!(
                    out,
                    "  In the window:  {} to {}",
                    when(&window.opens_at, now),
                    window.closes_at.0
                );
            }
        }
        (None, None) => {
            let _ = writeln!(
                out,
                "  Next rotation:  none scheduled (no spec.rotation); `kubectl twilio rotate` rotates now"
            );
        }
        (None, Some(_)) => {}
    }
    if let Some(sub) = sub {
        let _ = writeln!(out, "  Subaccount:     {}", subaccount_line(sub));
    }
    out
}

fn subaccount_line(sub: &TwilioSubaccount) -> String {
    let st = sub.status.clone().unwrap_or_default();
    let mut line = format!(
        "{} {}",
        sub.name_any(),
        st.sid.as_deref().unwrap_or("(no SID yet)")
    );
    if let Some(status) = &st.twilio_status {
        let _ = write!(line, ", {status} at Twilio");
    }
    if let (Some(budget), Some(spec)) = (&st.budget, &sub.spec.budget) {
        let _ = write!(
            line,
            ", budget {} of {} {} ({}%)",
            budget.spent,
            spec.monthly,
            budget.currency.to_uppercase(),
            budget.percent
        );
        if budget.suspended_by_budget {
            line.push_str(", suspended by its budget until next month or a higher spec.budget.monthly");
        }
    }
    line
}

fn describe_subaccount(sub: &TwilioSubaccount, now: Timestamp) -> String {
    let mut out = format!(
        "TwilioSubaccount {}/{}\n",
        sub.namespace().unwrap_or_default(),
        sub.name_any()
    );
    let st = sub.status.clone().unwrap_or_default();
    verdict(
        &mut out,
        &st.conditions,
        st.observed_generation,
        sub.metadata.generation,
    );
    let _ = writeln!(out, "  Subaccount:     {}", subaccount_line(sub));
    if let Some(keys) = st.api_keys {
        let _ = writeln!(out, "  API keys:       {keys} TwilioApiKeys use it");
    }
    if let Some(next) = st.auth_token.as_ref().and_then(|t| t.next_rotation_at.as_ref()) {
        let _ = writeln!(out, "  Token rotation: {}", when(next, now));
    }
    if let Some(voice) = &st.voice {
        let countries = match voice.countries_enabled {
            1 => "1 country".to_owned(),
            n => format!("{n} countries"),
        };
        let reach = if voice.inherit {
            format!("inherits its parent's ({countries})")
        } else {
            countries
        };
        let risky = match voice.high_risk.as_slice() {
            [] => "no high-risk range".to_owned(),
            codes => format!("HIGH-RISK ranges in {}", codes.join(", ")),
        };
        let _ = writeln!(out, "  Voice dialing:  {reach}, {risky}");
        if let Some(c) = st.conditions.iter().find(|c| c.type_ == "DialingPermissions") {
            let _ = writeln!(out, "                  {}: {}", c.reason, c.message);
        }
    }
    out
}

fn describe_policy(
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
    accounts: &[TwilioAccount],
) -> String {
    let mut out = String::new();
    let admitting: Vec<&TwilioAccount> = accounts
        .iter()
        .filter(|a| tenancy::admits(a, namespace, labels))
        .collect();
    if admitting.is_empty() {
        let _ = writeln!(
            out,
            "No TwilioAccount admits namespace {namespace}: its objects get NotPermitted unless they bring spec.credentialsRef."
        );
        return out;
    }
    for account in admitting {
        let name = account.name_any();
        let default = if name == tenancy::DEFAULT_ACCOUNT {
            " (used when accountRef is absent)"
        } else {
            ""
        };
        let sid = account
            .status
            .as_ref()
            .and_then(|s| s.account_sid.clone())
            .unwrap_or_else(|| "not checked yet".into());
        let _ = writeln!(
            out,
            "TwilioAccount {name}{default}: admits {namespace}; account {sid}"
        );
        let keys = &account.spec.api_keys;
        // The enums' variant names are their names in the API.
        let types: Vec<String> = keys.key_types.iter().map(|t| format!("{t:?}")).collect();
        let _ = writeln!(
            out,
            "  API keys:       types {}",
            if types.is_empty() {
                "none".into()
            } else {
                types.join(", ")
            }
        );
        if let Some(patterns) = &keys.permissions {
            let _ = writeln!(
                out,
                "                  permissions matching {}",
                patterns.join(", ")
            );
        }
        if let Some(max) = keys.max_per_namespace {
            let _ = writeln!(out, "                  at most {max} per namespace");
        }
        let subs = &account.spec.subaccounts;
        let _ = writeln!(
            out,
            "  Subaccounts:    create {}",
            if subs.create { "allowed" } else { "not allowed" }
        );
        let adopt: Vec<&str> = subs
            .adopt
            .iter()
            .filter(|g| g.namespace == namespace)
            .map(|g| g.sid.as_str())
            .collect();
        if !adopt.is_empty() {
            let _ = writeln!(out, "                  may adopt {}", adopt.join(", "));
        }
        let policies: Vec<String> = subs.deletion_policies.iter().map(|p| format!("{p:?}")).collect();
        let _ = writeln!(out, "                  deletionPolicy {}", policies.join(", "));
        if let Some(max) = subs.max_per_namespace {
            let _ = writeln!(out, "                  at most {max} per namespace");
        }
        if let Some(budget) = &subs.budget {
            let required = if budget.required { "required" } else { "optional" };
            let cap = budget
                .max_monthly
                .as_deref()
                .map(|m| format!(", at most {m} a month"))
                .unwrap_or_default();
            let _ = writeln!(out, "                  budget {required}{cap}");
        }
        let voice = &subs.voice;
        let countries = voice
            .countries
            .as_ref()
            .map_or_else(|| "any country".to_owned(), |c| c.join(", "));
        let _ = writeln!(
            out,
            "                  voice dialing {}: {countries}, high-risk ranges {:?}",
            if voice.required {
                "declared (required)"
            } else {
                "optional"
            },
            voice.high_risk
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_read_in_their_two_largest_units() {
        assert_eq!(span(30 * 86_400 - 300), "29d 23h");
        assert_eq!(span(3 * 3_600 + 300), "3h 5m");
        assert_eq!(span(720), "12m");
        assert_eq!(span(59), "under a minute");
    }
}

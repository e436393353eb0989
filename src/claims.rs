//! One object per subaccount SID in the whole cluster. Before a TwilioSubaccount acts on a SID it
//! holds that SID's claim: a Lease named after the SID in the operator's namespace, held by the
//! object's UID. Creating a Lease is atomic, so of two objects racing for one SID exactly one wins
//! and the other gets `SidInUse`, naming the holder. A claim whose holder no longer exists is taken
//! over; a claim is released when its object goes.

use crate::api::TwilioSubaccount;
use crate::conditions::{Problem, Reason};
use crate::context::{Context, MANAGER};
use crate::reconcile::Stop;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Annotation on a claim naming its holder as `namespace/name`, for people and for the check
/// that the holder still exists.
const HOLDER_ANNOTATION: &str = "twilio.operator.dev/holder";

fn lease_name(sid: &str) -> String {
    format!("twilio-subaccount-{}", sid.to_ascii_lowercase())
}

/// Holds the claim on `sid` for `sub`, or says who holds it.
pub async fn claim(ctx: &Context, sid: &str, sub: &TwilioSubaccount) -> Result<(), Stop> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.cluster.own_namespace);
    let name = lease_name(sid);
    let uid = sub.uid().unwrap_or_default();
    let me = format!("{}/{}", sub.namespace().unwrap_or_default(), sub.name_any());
    // Twice at most: a stale claim is removed once, then ours is created.
    for _ in 0..2 {
        let Some(existing) = api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    annotations: Some(BTreeMap::from([(HOLDER_ANNOTATION.to_owned(), me.clone())])),
                    labels: Some(BTreeMap::from([(
                        crate::secret::MANAGED_BY_LABEL.to_owned(),
                        crate::secret::MANAGED_BY.to_owned(),
                    )])),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(uid.clone()),
                    ..Default::default()
                }),
            };
            match api
                .create(
                    &PostParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &lease,
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Somebody created it in between: look again.
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let holder_uid = existing
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder_uid == uid {
            return Ok(());
        }
        let holder = existing
            .annotations()
            .get(HOLDER_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if holder_alive(ctx, &holder, &holder_uid).await? {
            // Another namespace's object is named to nobody outside it.
            let ns = sub.namespace().unwrap_or_default();
            let named = match holder.split_once('/') {
                Some((theirs, name)) if theirs == ns => format!("TwilioSubaccount {name} of this namespace"),
                _ => "an object in another namespace".to_owned(),
            };
            return Err(Problem::new(
                Reason::SidInUse,
                format!(
                    "Subaccount {sid} is already managed by {named}: one object per subaccount. Delete one of the two"
                ),
            )
            .into());
        }
        delete_unchanged(&api, &existing).await?;
    }
    Err(Problem::new(
        Reason::SidInUse,
        format!("Subaccount {sid} is being claimed by another object; retrying"),
    )
    .into())
}

/// Whether the TwilioSubaccount `holder` (`namespace/name`) exists with UID `uid`.
async fn holder_alive(ctx: &Context, holder: &str, uid: &str) -> Result<bool, kube::Error> {
    let Some((ns, name)) = holder.split_once('/') else {
        return Ok(false);
    };
    let found = Api::<TwilioSubaccount>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(found.is_some_and(|o| o.meta().uid.as_deref() == Some(uid)))
}

/// Releases the claim on `sid` if the object with `uid` holds it.
pub async fn release(ctx: &Context, sid: &str, uid: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.cluster.own_namespace);
    let name = lease_name(sid);
    let Some(existing) = api.get_opt(&name).await? else {
        return Ok(());
    };
    if existing.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) != Some(uid) {
        return Ok(());
    }
    delete_unchanged(&api, &existing).await
}

/// Deletes the claim `existing` unless it changed since it was read (or is already gone).
async fn delete_unchanged(api: &Api<Lease>, existing: &Lease) -> Result<(), kube::Error> {
    let unchanged = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.uid(),
            resource_version: existing.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&existing.name_any(), &unchanged).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

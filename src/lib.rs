//! twilio-operator: Twilio subaccounts and API keys as Kubernetes objects.
//!
//! The crate is a library so that the binaries (the operator, `crdgen`) and the integration
//! tests share one definition of every type.

#![warn(missing_docs)]

pub mod account;
pub mod api;
pub mod apikey;
pub mod budget;
pub mod claims;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod crds;
pub mod dialing;
pub mod failpoint;
pub mod fence;
pub mod fingerprint;
pub mod leadership;
pub mod membership;
pub mod metrics;
pub mod objects;
pub mod quota;
pub mod reconcile;
pub mod secret;
pub mod server;
pub mod subaccount;
pub mod tagging;
pub mod target;
pub mod template;
pub mod tenancy;
pub mod twilio;
pub mod webhook;

/// Finalizer held on every object whose Twilio side must be cleaned up before it goes.
pub const FINALIZER: &str = "twilio.operator.dev/finalizer";

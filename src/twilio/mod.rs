//! The Twilio REST client the operator acts through.
//!
//! Contract: callers get typed operations ([`TwilioClient`]'s methods), typed and classified
//! errors ([`Error`], [`ErrorClass`]), and credentials whose secrets never print
//! ([`Credentials`]). Limits, retries and pagination are the transport's business.

mod client;
mod credentials;
mod endpoints;
mod error;
mod inventory;
pub mod types;

pub use client::{BaseUrls, ClientConfig, Observer, TwilioClient};
pub use credentials::{Auth, Credentials, CredentialsError, is_sid};
pub use endpoints::MAX_COUNTRY_UPDATES;
pub use error::{Error, ErrorClass};
pub use inventory::{Busy, Inventories, Inventory};

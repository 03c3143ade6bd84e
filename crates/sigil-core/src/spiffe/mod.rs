//! The SPIFFE issuer: the trust domain's X.509 authority and bundle, and the registration
//! entries that say which workloads get which SPIFFE IDs.

mod authority;
pub mod entries;
pub mod federation;
pub mod jwt_svid;
pub mod nodes;

pub use authority::{SpiffeError, StoredAuthority, StoredJwtAuthority, SvidKey, X509Ca};

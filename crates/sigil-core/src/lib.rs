//! Sigil's domain: the registry of identities, keys, admin credentials and the audit records that
//! go with every change. It sees no HTTP, SQL or gRPC: storage, time and randomness are ports.

pub mod admin_auth;
pub mod audit;
pub mod keys;
pub mod model;
pub mod oauth;
pub mod policy;
pub mod ports;
pub mod registry;
pub mod spiffe;
pub mod store;

pub use ports::{Clock, FakeClock, Rng, SystemClock, SystemRng, new_id};

//! `sigil node`: the node agent. It attests its host to the Sigil server with a one-time join
//! token, keeps its own X509-SVID renewed, keeps the SVIDs of the workloads registered on this
//! node in a local cache, and serves them over the SPIFFE Workload API (gRPC on a unix socket)
//! to callers it attests by their peer credentials.

pub mod agent;
pub mod attestor;
pub mod cache;
pub mod client;
pub mod connection;
pub mod identity;
mod run;
pub mod workload_api;

pub use run::{NodeConfig, NodeError, run};

/// Code generated from `proto/workload.proto` (no package: the file is `_.rs`).
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

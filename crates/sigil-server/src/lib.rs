//! Sigil's server: the composition root, the HTTP adapter (axum), configuration, background
//! tasks and telemetry. The one place where domain errors become HTTP responses.

pub mod app;
mod authz;
pub mod bootstrap;
pub mod config;
pub mod gate;
pub mod http;
mod idle;
mod jwks_fetch;
pub mod serve;
mod sinks;
pub mod telemetry;
mod tls;

pub use app::App;
pub use config::{Config, ConfigError, Flags};
pub use serve::{Running, ServeError, start};

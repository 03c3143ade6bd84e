//! The OAuth 2.1 authorization server for agents: clients bound to identities, client
//! authentication (RFC 7523 `private_key_jwt`, `client_secret_basic`/`_post`), the
//! `client_credentials` grant with resource indicators (RFC 8707), JWT access tokens (RFC 9068),
//! introspection (RFC 7662) and revocation (RFC 7009). Errors are RFC 6749 §5.2 codes.

pub mod authorize;
mod cache;
pub mod client;
pub mod client_auth;
mod delegated_token;
pub mod delegation;
pub mod dpop;
pub mod enterprise;
pub mod error;
pub mod exchange;
pub mod grant;
mod id_token;
pub mod introspection;
pub mod jti;
pub mod metadata_doc;
pub mod numeric_date;
pub mod policy;
pub mod reads;
mod refusals;
pub mod registration;
pub mod service;
mod sign_in;
pub mod svid_auth;
pub mod token;
pub mod trusted;
pub mod userinfo;
mod verified;

pub use client::{ClientAuthMethod, OAuthClient};
pub use error::{ErrorCode, OAuthError};
pub use service::{OAuthConfig, OAuthDeps, OAuthService};

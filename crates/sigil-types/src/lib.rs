//! Sigil's identifiers and value objects.
//!
//! Every type here is built only by parsing: once a value exists it is valid, so the rest of the
//! code never re-checks a name, a scope or a URI. No IO, no async.

mod ceiling;
mod error;
mod ids;
mod names;
mod net;
mod resource;
mod scope;
mod spiffe;
mod status;
mod time;

pub use ceiling::Ceiling;
pub use error::ParseError;
pub use ids::{IdentityId, ResourceId, UserId, encode_ulid};
pub use names::{
    Description, DisplayName, Email, Group, LabelKey, LabelValue, Labels, Name, Reason, TeamName, Username,
};
pub use net::{has_dot_segment, special_use_address};
pub use resource::ResourceUri;
pub use scope::{Scope, ScopeSet};
pub use spiffe::{SpiffeId, TrustDomain};
pub use status::{IdentityKind, IdentityStatus, StatusChange, UserStatus};
pub use time::Timestamp;

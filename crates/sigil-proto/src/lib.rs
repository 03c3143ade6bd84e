//! Wire DTOs only: admin API requests and responses, and RFC 9457 problem details.
//!
//! Request types reject unknown fields and parse every value into its sigil-types type, so a
//! request that deserializes is already well-formed.

pub mod admin;
pub mod node;
pub mod policy;
pub mod problem;

pub use problem::{FieldError, Problem};

/// A field that distinguishes "absent" (leave unchanged) from `null` (clear) in a PATCH body.
pub type Patch<T> = Option<Option<T>>;

/// Deserializes a present field (even `null`) as `Some(..)`, so `Patch` works with `#[serde(default)]`.
pub fn patch<'de, D, T>(d: D) -> Result<Patch<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(d).map(Some)
}

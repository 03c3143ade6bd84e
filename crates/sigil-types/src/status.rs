//! Lifecycle states and the kinds of non-human identity.

use crate::ParseError;

/// Defines a lowercase string enum with parse/as_str and serde through them.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseError::new($what, format!(
                        "expected one of: {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }

            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// A non-human identity's lifecycle state. `revoked` and `decommissioned` are final for
    /// trust: nothing brings an identity back from them.
    IdentityStatus, "status" {
        Active => "active",
        Suspended => "suspended",
        Revoked => "revoked",
        Decommissioned => "decommissioned",
    }
);

impl IdentityStatus {
    /// Revoked or decommissioned: nothing brings the identity back, so nothing new (a client, a
    /// registration token, a SPIFFE entry, a wider ceiling) is made for it either.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Revoked | Self::Decommissioned)
    }
}

string_enum!(
    /// A human user's state.
    UserStatus, "status" {
        Active => "active",
        Suspended => "suspended",
    }
);

string_enum!(
    /// What a non-human identity is. `agent` is an AI agent; the others are workloads.
    IdentityKind, "kind" {
        Agent => "agent",
        Service => "service",
        Job => "job",
        Pipeline => "pipeline",
        ServiceAccount => "service_account",
    }
);

impl IdentityKind {
    pub const fn is_agent(self) -> bool {
        matches!(self, Self::Agent)
    }
}

string_enum!(
    /// An operator's request to move an identity to another state.
    StatusChange, "status change" {
        Suspend => "suspend",
        Resume => "resume",
        Revoke => "revoke",
        Decommission => "decommission",
    }
);

impl StatusChange {
    /// The state this change leads to.
    pub const fn target(self) -> IdentityStatus {
        match self {
            Self::Suspend => IdentityStatus::Suspended,
            Self::Resume => IdentityStatus::Active,
            Self::Revoke => IdentityStatus::Revoked,
            Self::Decommission => IdentityStatus::Decommissioned,
        }
    }

    /// The states this change may start from. Asking for the state one is already in is not
    /// listed here; callers treat it as a no-op.
    pub const fn allowed_from(self) -> &'static [IdentityStatus] {
        use IdentityStatus::*;
        match self {
            Self::Suspend => &[Active],
            Self::Resume => &[Suspended],
            Self::Revoke => &[Active, Suspended],
            // Revoked stays revoked: decommissioning would erase the record that the identity
            // was compromised from every listing by status.
            Self::Decommission => &[Active, Suspended],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_cannot_be_left() {
        for change in StatusChange::ALL {
            assert!(!change.allowed_from().contains(&IdentityStatus::Decommissioned));
            assert!(!change.allowed_from().contains(&IdentityStatus::Revoked));
        }
    }

    #[test]
    fn parse_is_exact() {
        assert_eq!(IdentityKind::parse("service_account"), Ok(IdentityKind::ServiceAccount));
        assert!(IdentityKind::parse("Agent").is_err());
    }
}

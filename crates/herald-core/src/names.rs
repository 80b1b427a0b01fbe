//! Validated names: group names and usernames.
//!
//! Both are parsed once at the edge (HTTP, WebSocket, CLI, token claims) so that the rest of the
//! code never handles an unchecked string.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Maximum length of a group name or username, in bytes (both are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("may contain only a-z, 0-9, '-' and '_' (found {0:?})")]
    InvalidCharacter(char),
    #[error("may contain only letters, digits, '.', '-', '_' and '@' (found {0:?})")]
    InvalidUsernameCharacter(char),
}

/// A group's machine name: a lower-case slug of 1 to 64 characters from `a-z`, `0-9`, `-` and `_`.
///
/// The display name ("财务组") is separate and may be any text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    /// Parses a group name, rejecting anything that is not a lower-case slug.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_length(value)?;
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::InvalidCharacter(bad));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A username: 1 to 64 characters from ASCII letters, digits, `.`, `-`, `_` and `@`.
///
/// Case is kept as given; `Ops` and `ops` are different users.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Parses a username.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_length(value)?;
        if let Some(bad) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@')))
        {
            return Err(NameError::InvalidUsernameCharacter(bad));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_length(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    Ok(())
}

macro_rules! string_newtype_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype_impls!(GroupName);
string_newtype_impls!(Username);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_name_accepts_slugs() {
        for ok in ["finance", "ops-2", "a", "team_a", &"x".repeat(64)] {
            assert!(GroupName::parse(ok).is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn group_name_rejects_non_slugs() {
        assert_eq!(GroupName::parse(""), Err(NameError::Empty));
        assert_eq!(GroupName::parse(&"x".repeat(65)), Err(NameError::TooLong));
        assert_eq!(
            GroupName::parse("Finance"),
            Err(NameError::InvalidCharacter('F'))
        );
        assert_eq!(
            GroupName::parse("财务组"),
            Err(NameError::InvalidCharacter('财'))
        );
        assert_eq!(
            GroupName::parse("a b"),
            Err(NameError::InvalidCharacter(' '))
        );
    }

    #[test]
    fn username_rules() {
        assert!(Username::parse("Alice.W@corp").is_ok());
        assert_eq!(Username::parse(""), Err(NameError::Empty));
        assert_eq!(
            Username::parse("a/b"),
            Err(NameError::InvalidUsernameCharacter('/'))
        );
        assert_eq!(
            Username::parse("张三"),
            Err(NameError::InvalidUsernameCharacter('张'))
        );
    }

    #[test]
    fn deserialize_validates() {
        let ok: GroupName = serde_json::from_str("\"finance\"").unwrap();
        assert_eq!(ok.as_str(), "finance");
        assert!(serde_json::from_str::<GroupName>("\"FIN\"").is_err());
    }
}

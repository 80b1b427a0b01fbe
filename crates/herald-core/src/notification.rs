//! The notification record and its value types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{GroupName, Username};

/// Maximum content length, in Unicode scalar values (characters), not bytes.
pub const MAX_CONTENT_CHARS: usize = 4000;

/// A notification's database id.
pub type NotificationId = i64;

/// Notification text: 1 to 4,000 characters with at least one that is not white space.
///
/// The text is stored exactly as sent: no trimming, no normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("must contain at least one character that is not white space")]
    Blank,
    #[error("must be at most {MAX_CONTENT_CHARS} characters (got {0})")]
    TooLong(usize),
}

impl Content {
    pub fn parse(value: String) -> Result<Self, ContentError> {
        let chars = value.chars().count();
        if chars > MAX_CONTENT_CHARS {
            return Err(ContentError::TooLong(chars));
        }
        if value.chars().all(char::is_whitespace) {
            return Err(ContentError::Blank);
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// How urgent a notification is. Clients show `high` and `urgent` distinctly.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// Where a notification is in its life: every notification starts `pending` and may be
/// `confirmed` once; it never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Confirmed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
        }
    }
}

/// Error for a string that names no known enum value; carries the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of {expected}")]
pub struct UnknownValue {
    pub expected: &'static str,
}

impl FromStr for Priority {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownValue {
                expected: "low, normal, high, urgent",
            })
    }
}

impl FromStr for Status {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Status::Pending),
            "confirmed" => Ok(Status::Confirmed),
            _ => Err(UnknownValue {
                expected: "pending, confirmed",
            }),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A notification as the API and the event stream show it.
///
/// `read` is per caller: the REST API fills it in, while event frames leave it out because one
/// frame goes to every member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    pub id: NotificationId,
    pub content: String,
    #[schema(value_type = String)]
    pub sender: Username,
    #[schema(value_type = String)]
    pub sender_group: GroupName,
    #[schema(value_type = String)]
    pub receiver_group: GroupName,
    pub status: Status,
    pub priority: Priority,
    #[schema(value_type = Option<String>)]
    pub confirmed_by: Option<Username>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<bool>,
}

impl Notification {
    /// The two groups whose members see this notification, without duplicates.
    pub fn audience(&self) -> Vec<GroupName> {
        let mut groups = vec![self.receiver_group.clone()];
        if self.sender_group != self.receiver_group {
            groups.push(self.sender_group.clone());
        }
        groups
    }
}

/// The current time truncated to milliseconds, the precision every backend stores and the API
/// prints, so that a timestamp read back compares equal to the one written.
pub fn now_millis() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_counts_characters() {
        assert!(Content::parse("财".repeat(MAX_CONTENT_CHARS)).is_ok());
        assert_eq!(
            Content::parse("财".repeat(MAX_CONTENT_CHARS + 1)),
            Err(ContentError::TooLong(MAX_CONTENT_CHARS + 1))
        );
    }

    #[test]
    fn content_must_not_be_blank() {
        assert_eq!(Content::parse(String::new()), Err(ContentError::Blank));
        assert_eq!(
            Content::parse(" \n\t\u{3000}".into()),
            Err(ContentError::Blank)
        );
    }

    #[test]
    fn content_is_kept_exactly() {
        let raw = "  付款 🎉 \n".to_string();
        assert_eq!(Content::parse(raw.clone()).unwrap().into_inner(), raw);
    }

    #[test]
    fn priority_parses_and_defaults() {
        assert_eq!("urgent".parse::<Priority>(), Ok(Priority::Urgent));
        assert!("URGENT".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::Normal);
    }

    #[test]
    fn timestamps_serialize_with_z() {
        let at: DateTime<Utc> = "2024-01-01T12:00:00.120Z".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            "\"2024-01-01T12:00:00.120Z\""
        );
    }
}

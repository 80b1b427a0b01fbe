//! Who may send where, who may see a notification and who may confirm it.
//!
//! The caller's groups come from a verified access token, so every gateway instance decides the
//! same way without shared session state. The send rules come from storage.

use std::collections::BTreeSet;

use crate::names::{GroupName, Username};
use crate::notification::Notification;

/// The authenticated user making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: Username,
    /// Groups the user belongs to, as of the moment their token was issued.
    pub groups: BTreeSet<GroupName>,
    /// Administrators may read every notification, for audits. They confirm and send only
    /// through the groups they belong to.
    pub admin: bool,
}

impl Caller {
    pub fn is_member(&self, group: &GroupName) -> bool {
        self.groups.contains(group)
    }

    /// Whether the caller may see the notification: a member of its sender or receiver group,
    /// or an administrator.
    pub fn can_see(&self, notification: &Notification) -> bool {
        self.admin
            || self.is_member(&notification.sender_group)
            || self.is_member(&notification.receiver_group)
    }

    /// Whether the caller may confirm: only members of the receiving group.
    pub fn can_confirm(&self, notification: &Notification) -> bool {
        self.is_member(&notification.receiver_group)
    }
}

/// One send rule: members of `from` may send to `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SendRule {
    pub from: GroupName,
    pub to: GroupName,
}

/// Why a caller may not send to a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("you are not a member of group {0}")]
    NotMember(GroupName),
    #[error("group {from} may not send to group {to}")]
    NotAllowed { from: GroupName, to: GroupName },
    #[error("none of your groups may send to group {0}")]
    NoSenderGroup(GroupName),
    #[error("several of your groups may send to group {receiver}; choose one with sender_group")]
    Ambiguous {
        receiver: GroupName,
        choices: Vec<GroupName>,
    },
}

/// Picks the sender group for a notification to `receiver`.
///
/// With an explicit `requested` group, the caller must belong to it and the rules must allow it.
/// Without one, exactly one of the caller's groups must be allowed; several allowed groups are
/// ambiguous and the caller has to choose.
pub fn choose_sender_group(
    caller: &Caller,
    rules: &[SendRule],
    receiver: &GroupName,
    requested: Option<&GroupName>,
) -> Result<GroupName, SendError> {
    let allowed = |from: &GroupName| rules.iter().any(|r| &r.from == from && &r.to == receiver);

    if let Some(from) = requested {
        if !caller.is_member(from) {
            return Err(SendError::NotMember(from.clone()));
        }
        if !allowed(from) {
            return Err(SendError::NotAllowed {
                from: from.clone(),
                to: receiver.clone(),
            });
        }
        return Ok(from.clone());
    }

    let choices: Vec<GroupName> = caller
        .groups
        .iter()
        .filter(|g| allowed(g))
        .cloned()
        .collect();
    match choices.len() {
        0 => Err(SendError::NoSenderGroup(receiver.clone())),
        1 => Ok(choices.into_iter().next().expect("one choice")),
        _ => Err(SendError::Ambiguous {
            receiver: receiver.clone(),
            choices,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::{Priority, Status};

    fn group(name: &str) -> GroupName {
        GroupName::parse(name).unwrap()
    }

    fn caller(groups: &[&str]) -> Caller {
        Caller {
            username: Username::parse("u").unwrap(),
            groups: groups.iter().map(|g| group(g)).collect(),
            admin: false,
        }
    }

    fn rule(from: &str, to: &str) -> SendRule {
        SendRule {
            from: group(from),
            to: group(to),
        }
    }

    fn notification(from: &str, to: &str) -> Notification {
        Notification {
            id: 1,
            content: "x".into(),
            sender: Username::parse("s").unwrap(),
            sender_group: group(from),
            receiver_group: group(to),
            status: Status::Pending,
            priority: Priority::Normal,
            confirmed_by: None,
            confirmed_at: None,
            created_at: chrono::Utc::now(),
            read: None,
        }
    }

    #[test]
    fn single_allowed_group_is_chosen() {
        let rules = [rule("operations", "finance")];
        let got = choose_sender_group(
            &caller(&["operations", "hr"]),
            &rules,
            &group("finance"),
            None,
        );
        assert_eq!(got, Ok(group("operations")));
    }

    #[test]
    fn no_allowed_group_is_rejected() {
        let rules = [rule("operations", "finance")];
        let got = choose_sender_group(&caller(&["finance"]), &rules, &group("operations"), None);
        assert_eq!(got, Err(SendError::NoSenderGroup(group("operations"))));
    }

    #[test]
    fn several_allowed_groups_need_a_choice() {
        let rules = [rule("operations", "finance"), rule("hr", "finance")];
        let me = caller(&["operations", "hr"]);
        let got = choose_sender_group(&me, &rules, &group("finance"), None);
        assert_eq!(
            got,
            Err(SendError::Ambiguous {
                receiver: group("finance"),
                choices: vec![group("hr"), group("operations")]
            })
        );
        let picked = choose_sender_group(&me, &rules, &group("finance"), Some(&group("hr")));
        assert_eq!(picked, Ok(group("hr")));
    }

    #[test]
    fn requested_group_must_be_member_and_allowed() {
        let rules = [rule("operations", "finance")];
        let me = caller(&["hr"]);
        let not_member =
            choose_sender_group(&me, &rules, &group("finance"), Some(&group("operations")));
        assert_eq!(not_member, Err(SendError::NotMember(group("operations"))));
        let not_allowed = choose_sender_group(&me, &rules, &group("finance"), Some(&group("hr")));
        assert!(matches!(not_allowed, Err(SendError::NotAllowed { .. })));
    }

    #[test]
    fn visibility_and_confirmation() {
        let n = notification("operations", "finance");
        assert!(caller(&["operations"]).can_see(&n));
        assert!(!caller(&["operations"]).can_confirm(&n));
        assert!(caller(&["finance"]).can_confirm(&n));
        assert!(!caller(&["hr"]).can_see(&n));

        let admin = Caller {
            admin: true,
            ..caller(&[])
        };
        assert!(admin.can_see(&n));
        assert!(!admin.can_confirm(&n));
    }
}

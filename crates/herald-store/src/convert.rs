//! Conversions from rows to domain records. A row that fails to convert was written by
//! something other than Herald, and is reported as an internal error.

use herald_core::store::{StoreError, StoreResult};
use herald_core::{GroupName, Notification, Username};

use crate::entity::notification;

pub fn group_name(raw: &str) -> StoreResult<GroupName> {
    GroupName::parse(raw).map_err(|e| corrupt("read a group name", format!("{raw:?}: {e}")))
}

pub fn username(raw: &str) -> StoreResult<Username> {
    Username::parse(raw).map_err(|e| corrupt("read a username", format!("{raw:?}: {e}")))
}

pub fn notification(row: notification::Model, read: Option<bool>) -> StoreResult<Notification> {
    Ok(Notification {
        id: row.id,
        sender: username(&row.sender)?,
        sender_group: group_name(&row.sender_group)?,
        receiver_group: group_name(&row.receiver_group)?,
        status: row
            .status
            .parse()
            .map_err(|_| corrupt("read a notification status", row.status.clone()))?,
        priority: row
            .priority
            .parse()
            .map_err(|_| corrupt("read a notification priority", row.priority.clone()))?,
        confirmed_by: row.confirmed_by.as_deref().map(username).transpose()?,
        confirmed_at: row.confirmed_at,
        created_at: row.created_at,
        content: row.content,
        read,
    })
}

fn corrupt(context: &'static str, detail: String) -> StoreError {
    StoreError::Internal {
        context,
        source: format!("unexpected value in the database: {detail}").into(),
    }
}

//! sea-orm entities, one module per table. The schema itself is defined by the migrations.

pub mod group;
pub mod group_event;
pub mod notification;
pub mod notification_read;
pub mod send_rule;
pub mod user;
pub mod user_group;

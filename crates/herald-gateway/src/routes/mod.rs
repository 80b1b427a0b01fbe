//! HTTP handlers, one module per resource.

pub mod auth;
pub mod groups;
pub mod health;
pub mod notifications;
pub mod openapi;

//! HTTP handlers, one module per resource, and the WebSocket handshakes.

pub mod auth;
pub mod groups;
pub mod health;
pub mod notifications;
pub mod openapi;
pub mod web;
pub mod ws;

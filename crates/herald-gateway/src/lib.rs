//! Herald's gateway: the axum application (REST API and WebSocket), JWT authentication,
//! configuration, and the command line behind the `herald` binary.
//!
//! - [`app`]: shared state, the router and the server loop.
//! - [`routes`]: HTTP handlers, one module per resource, and the WebSocket handshakes.
//! - [`realtime`]: live delivery to sockets: group channels, outboxes and sessions.
//! - [`auth`]: access tokens and password hashing.
//! - [`config`]: settings from herald.toml, the environment and flags.
//! - [`cli`]: the `herald` commands.
//! - [`error`]: the one error type and its problem+json rendering.
//! - [`metrics`]: Prometheus metrics and the `/metrics` route.
//!
//! The gateway keeps no session state: identity and group membership come from the token, data
//! from the store, and fan-out between instances from the broker.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod logging;
pub mod metrics;
pub mod realtime;
pub mod routes;

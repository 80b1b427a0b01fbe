//! Live delivery over WebSocket.
//!
//! - [`hub`]: per-group channels fed by the broker and backfilled from storage, the registry of
//!   open sockets, and shutdown.
//! - [`outbox`]: each socket's bounded outbound queue.
//! - [`session`]: one socket after the upgrade: replay, live writing, commands and closing.
//! - [`protocol`]: client commands, replies and close codes.
//!
//! Every socket receives each event of its groups once, in seq order, with no gaps: replayed
//! from storage when it connects with `since`, then live. A channel never waits for a socket, so
//! a slow reader only loses its own connection (close code 4008) and resumes with `since`.

pub mod hub;
pub mod outbox;
pub mod protocol;
pub mod session;

pub use hub::{Hub, RealtimeOptions};

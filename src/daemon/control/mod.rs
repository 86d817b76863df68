//! The control API: JSON lines over a Unix socket in the data dir.
//!
//! One request per connection: the client writes one JSON object on one
//! line; the daemon answers with one or more lines and closes. The last line
//! has `"ok": true` plus the command's reply, or `"ok": false` with an
//! `"error"` and a `"code"`; lines before it are progress events
//! (`"event": "progress"`). [`proto`] has every message as a type; see
//! docs/CONTROL.md.
//!
//! Only the daemon's own user may connect: the socket is 0600 in a 0700
//! directory, and the peer's uid is checked on every connection.

mod client;
#[cfg(test)]
mod doc_tests;
pub mod proto;
mod server;

pub use client::{call, ClientError};
pub use proto::*;
pub(in crate::daemon) use server::{run_detached, serve};

//! The wire protocol of window-node (`docs/protocol.md`), without I/O.
//!
//! Contract: every byte a node reads or writes on the wire passes through this crate. It turns
//! a line into a typed [`Request`] (one strict pass for valid requests, a second, explaining
//! pass that names the bad field and value for the others), and every reply or streamed message
//! into its exact text, through ONE render function per message kind in [`reply`]. Errors are
//! [`ProtoError`]s, each variant with its stable wire code and [`Class`]. A peer node's replies
//! are read through the one parser in [`peer`].
//!
//! # Main types
//! - [`parse_request`], [`Request`], [`Body`]: one request line, parsed (events borrowed).
//! - [`reply`]: `window_closed`, `flushed`, `stats_ok`, `error`, ... behind a [`Header`]
//!   (style, envelope, `in_reply_to`).
//! - [`LineSplitter`] (lines with a length limit) and [`Reassembler`] (pretty-printed
//!   multi-line requests): framing, for the stdin node and TCP connections alike.
//! - [`peer::Peek`], [`peer::expect_reply`], [`peer::PeerFields`], [`peer::mark_request_id`]:
//!   what a forwarding or routing node reads of its peers' lines.
//!
//! # What it does not do
//! No I/O, no clock, no engine state: it never decides anything about windows (that is
//! `window-core`, driven by `window-service`). It takes core types (`ClosedWindow`, `Event`),
//! never a store's.

mod error;
pub mod flat;
mod json;
mod kind;
mod lines;
pub mod peer;
mod reassemble;
pub mod reply;
mod request;

pub use crate::error::{Class, ProtoError, check_formattable, window_bounds};
pub use crate::json::{JsonWriter, Style};
pub use crate::kind::Kind;
pub use crate::lines::{Line, LineSplitter};
pub use crate::reassemble::{Assembled, Reassembler};
pub use crate::reply::{Address, Header};
pub use crate::request::{
    Batch, Body, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_UNACKED, FromSeq, GroupJoin,
    MAX_GROUP_NAME, MAX_REQUEST_ID, REQUEST_TYPES, ReplyTo, Request, Timestamps, check_group_name,
    parse_request, parse_request_with, peek_group_subscribe, peek_msg_id, peek_subscribe,
};

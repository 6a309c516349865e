//! The sans-I/O service of window-node, in the manner of quinn-proto's `Connection`.
//!
//! Contract: [`Service`] owns the engine and everything that turns engine steps into a durable,
//! numbered output: the sequence number of every fired window (the only place windows are
//! numbered), the outcomes of requests with a `request_id` (a repeat is answered from its
//! record, never run twice), the idle or ingest-time watermark, the consumer groups (which member
//! holds which window, what was acknowledged; durable in the same batches), and the group-commit
//! policy (what a group of requests writes, and when a group that only moved the watermark is
//! not worth a write). Its
//! inputs are requests and `now`; its outputs are replies, store batches and windows to
//! publish. It never reads a clock, never touches a store or a socket, and knows no lease: the
//! owner (the stdin node, or the daemon's driver shell) asks the gate, commits, syncs, and only
//! then answers.
//!
//! # Driving it
//! 1. Feed requests: [`Service::ingest`], [`Service::close`], [`Service::flush`], each with the
//!    current processing time or an [`OutputLog`] to read a repeat's records from; feed
//!    [`Service::handle_timeout`] when [`Service::next_timeout`] is due.
//! 2. After a group of requests: [`Service::poll_batch`]; commit the batch to the store, hand
//!    it back to [`Service::on_committed`] (which returns the fired windows), sync, and only
//!    then send the group's replies and publish its windows ([`Service::take_late`] too).
//! 3. Re-arm the one timer from [`Service::next_timeout`].
//!
//! A failed commit or sync leaves the service ahead of its store: the owner stops.
//!
//! # What it does not do
//! No I/O, no clock, no threads, no JSON text (replies are typed; `window-proto` renders them),
//! no lease: "may this process fire now?" is the owner's question, asked before each group.

mod close;
mod fingerprint;
mod groups;
mod remembered;
mod retention;
mod service;

pub use crate::groups::{Delivery, MemberId, trimmed};
pub use crate::retention::Retention;
pub use crate::service::{
    Answer, Config, DEFAULT_ACK_TIMEOUT_MS, IDLE_TICK_MS, LateNotice, NoLog, OutputLog, OwnedEvent,
    Service, Stats, TimeBase, WATERMARK_WRITE_EVERY_MS,
};

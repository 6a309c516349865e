//! Pure tumbling-window logic: timestamps, window arithmetic and a sans-I/O engine.
//!
//! `window-core` decides which window an event belongs to and when a window fires. It does no
//! I/O, reads no clock, knows no JSON and never panics on input: every timestamp, including "now",
//! comes in as a parameter, so the same inputs always give the same outputs, and a restored engine
//! behaves exactly like one that never stopped.
//!
//! # Main types
//! - [`Timestamp`]: milliseconds since the epoch; strict RFC 3339 parsing and UTC formatting.
//! - [`WindowSpec`] and [`IdFrame`]: window arithmetic (floor toward minus infinity) and the two
//!   window-id frames of the wire protocol.
//! - [`Engine`]: the open state and the firing rules (watermark, time-or-length purge, `close`,
//!   `flush`), with idempotent ingestion by event id within a window.
//! - [`group_by_window`]: how `process_window` groups one batch.
//!
//! # Driving the engine
//! The caller owns the I/O and the clock, in the manner of quinn's `Connection`:
//! 1. Feed inputs: [`Engine::handle_events`] (with the current processing time),
//!    [`Engine::handle_deadline`] when the timer fires, [`Engine::handle_watermark`] to move
//!    event time without events, [`Engine::close`] and [`Engine::flush`] on request.
//! 2. After every input, drain [`Engine::poll_closed`]: these windows have fired and must be
//!    emitted. With a store (after [`Engine::track_changes`]), write [`Engine::take_dirty`] and
//!    the fired windows in one atomic batch, so a window is either still open or fired exactly
//!    once, and acknowledge the input only once that batch is durable.
//! 3. Re-arm the one timer from [`Engine::next_deadline`].
//!
//! [`Engine::snapshot`] and [`Engine::restore`] carry the open state across a restart.
//!
//! # What it does not do
//! No persistence (that is `window-store`), no wire format (that is `window-node`), no sliding or
//! session windows, and no wall clock.

mod engine;
mod error;
mod event;
mod group;
mod payloads;
mod spec;
mod time;
mod window;

pub use crate::engine::{
    Admission, Counters, Dirty, Engine, EngineSnapshot, EngineStats, LateEvent, WindowDelta,
    WindowSelector,
};
pub use crate::error::{BatchError, CloseError};
pub use crate::event::{Event, EventId, Payload};
pub use crate::group::{BatchWindow, group_by_window};
pub use crate::spec::{
    EngineConfig, IdFrame, LatePolicy, PurgePolicy, SizeMs, SpecError, WindowBounds, WindowId,
    WindowSpec,
};
pub use crate::time::{DateMemo, Rfc3339Text, Timestamp, TimestampError};
pub use crate::window::{Aggregate, CloseReason, ClosedWindow, WindowKey, WindowSnapshot};

#[cfg(test)]
mod tests;

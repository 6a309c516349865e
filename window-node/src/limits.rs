//! Limits that two sides of a connection between nodes must agree on.

/// Replies a connection may have pending before it stops reading.
pub const PIPELINE: usize = 64;

/// Lines a node forwarding to another (a follower, a router's link) keeps in flight on one
/// connection: fewer than the other's [`PIPELINE`], so the other's reader never stops, and a
/// forwarder busy writing (not reading replies) cannot deadlock with it.
pub const IN_FLIGHT: usize = PIPELINE - 16;

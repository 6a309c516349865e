//! Pure decisions of a window-node cluster, with no I/O.
//!
//! Contract: given what a process observed (a lease record, the live nodes, the partitions it
//! holds) and the time on its own clock as a parameter, this crate says what the process should
//! do: acquire, renew, follow or step down ([`lease::decide`]), whether it may fire now
//! ([`lease::may_fire`]), how many partitions it may hold ([`lease::fair_share`]) and which to
//! hand over ([`lease::hand_over`]), and which partition a key belongs to
//! ([`partition::partition_of`]); and what becomes of the requests a node forwards to a holder
//! when that holder dies, refuses or cannot be reached ([`link::Link`], the one link state
//! machine of the follower and the partition router). Every rule is tested with explicit times.
//!
//! # What it does not do
//! No I/O, no clock, no threads, no tokio: the binary's lease keepers (a file lock, Redis
//! scripts) carry the decisions out, and the stores' compare-and-set is the mutual exclusion.

pub mod lease;
pub mod link;
pub mod partition;

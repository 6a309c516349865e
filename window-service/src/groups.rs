//! Consumer groups: each fired window goes to exactly one connected member of a group, is
//! acknowledged by it, and goes to another member when its member leaves or lets the ack
//! timeout pass. Delivery is at least once per group; nothing acknowledged is delivered again.
//!
//! Durable, per group (a [`GroupRecord`], written in the batches of the log it reads): where the
//! group is in the log (`next`, the first seq never handed out) and what was acknowledged
//! (`acked_below`, and the acknowledged seqs above it). In memory only: the members, what each
//! holds unacknowledged, and the seqs waiting to be delivered again. After a restart every seq
//! from `acked_below` to `next` that is not acknowledged was delivered at least once, so it is
//! delivered again with `delivery` 2.

use std::collections::{BTreeMap, BTreeSet};

use window_core::Timestamp;
use window_proto::reply::GroupStats;
use window_proto::{ProtoError, check_group_name};
use window_store::GroupRecord;

/// The refusal of a `from_seq` below the oldest window the output log keeps.
pub fn trimmed(from: u64, oldest: u64) -> ProtoError {
    ProtoError::malformed(format!(
        "from_seq {from} is below the oldest window the output log keeps (seq {oldest}; --log-retention dropped the older ones): give from_seq {oldest} or later"
    ))
}

/// A member: one subscribed connection, named by its owner.
pub type MemberId = u64;

/// One window to hand to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Who gets it.
    pub member: MemberId,
    /// Which window of the log.
    pub seq: u64,
    /// 1 the first time this group hands it out, then 2, 3, ...
    pub delivery: u32,
}

/// A window out with a member.
#[derive(Clone, Copy, Debug)]
struct Out {
    member: MemberId,
    delivery: u32,
    /// When it goes to another member unless acknowledged.
    deadline: Timestamp,
}

/// What a member may hold, and holds, unacknowledged.
#[derive(Clone, Copy, Debug)]
struct Room {
    max: u32,
    held: u32,
}

#[derive(Debug, Default)]
struct Group {
    /// Durable (see [`GroupRecord`]).
    first: u64,
    acked_below: u64,
    acked: BTreeSet<u64>,
    next: u64,
    /// Delivered and not acknowledged.
    out: BTreeMap<u64, Out>,
    /// To be delivered again, with how often each was delivered so far.
    again: BTreeMap<u64, u32>,
    /// Connected members.
    members: BTreeMap<MemberId, Room>,
    /// The member after which the next window goes (round robin).
    last_member: Option<MemberId>,
    redelivered: u64,
    /// The durable part changed since the last batch.
    dirty: bool,
}

/// Every consumer group of one output log.
#[derive(Debug, Default)]
pub struct Groups {
    groups: BTreeMap<String, Group>,
    /// Which group each member is in.
    member_of: BTreeMap<MemberId, String>,
    ack_timeout_ms: i64,
}

impl Groups {
    /// The lowest seq some group has not acknowledged (what the log's retention must keep).
    pub fn lowest_unacked(&self) -> Option<u64> {
        self.groups.values().map(|g| g.acked_below).min()
    }

    /// The groups of `records` (from the store), with nothing out: every seq delivered before
    /// and not acknowledged waits to be delivered again.
    pub fn restore(records: Vec<GroupRecord>, ack_timeout_ms: u64) -> Groups {
        let groups = records
            .into_iter()
            .map(|r| {
                let acked: BTreeSet<u64> = r.acked.into_iter().collect();
                let again = (r.acked_below..r.next)
                    .filter(|seq| !acked.contains(seq))
                    .map(|seq| (seq, 1))
                    .collect();
                let group = Group {
                    first: r.first,
                    acked_below: r.acked_below,
                    acked,
                    next: r.next,
                    again,
                    ..Group::default()
                };
                (r.name, group)
            })
            .collect();
        Groups {
            groups,
            member_of: BTreeMap::new(),
            ack_timeout_ms: i64::try_from(ack_timeout_ms).unwrap_or(i64::MAX),
        }
    }

    /// `member` joins group `name`, holding at most `max_unacked` windows unacknowledged. A new
    /// group starts at `from_seq` (a seq beyond `log_end` skips the windows before it), or at
    /// `log_end` (the next window fired) without one; an existing group ignores `from_seq`.
    /// Returns the seq the group started at.
    /// A new group cannot start below `log_start`, the oldest window the log keeps.
    pub fn join(
        &mut self,
        name: &str,
        member: MemberId,
        max_unacked: u32,
        from_seq: Option<u64>,
        (log_start, log_end): (u64, u64),
    ) -> Result<u64, ProtoError> {
        check_group_name(name)?;
        if let Some(from) = from_seq
            && from < log_start
            && !self.groups.contains_key(name)
        {
            return Err(trimmed(from, log_start));
        }
        if max_unacked == 0 {
            return Err(ProtoError::malformed(
                "max_unacked must be at least 1 (windows a member may hold unacknowledged)",
            ));
        }
        let group = self.groups.entry(name.to_owned()).or_insert_with(|| {
            let start = from_seq.unwrap_or(log_end);
            Group {
                first: start,
                acked_below: start,
                next: start,
                dirty: true,
                ..Group::default()
            }
        });
        group.members.insert(
            member,
            Room {
                max: max_unacked,
                held: 0,
            },
        );
        self.member_of.insert(member, name.to_owned());
        Ok(group.first)
    }

    /// `member` is gone (its connection ended): what it held goes to the others.
    pub fn leave(&mut self, member: MemberId) {
        let Some(name) = self.member_of.remove(&member) else {
            return;
        };
        let Some(group) = self.groups.get_mut(&name) else {
            return;
        };
        group.members.remove(&member);
        let held: Vec<u64> = group
            .out
            .iter()
            .filter(|(_, out)| out.member == member)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in held {
            if let Some(out) = group.out.remove(&seq) {
                group.again.insert(seq, out.delivery);
            }
        }
    }

    /// `member` acknowledges `seqs`: all or nothing. A seq acknowledged already counts as done
    /// (an ack sent again), and so does one waiting to be delivered again (its member left, or
    /// a failover forgot who held it, and the work was done after all); one held by another
    /// member, or never delivered, is an error naming it. Returns how many were newly
    /// acknowledged.
    pub fn ack(&mut self, member: MemberId, seqs: &[u64]) -> Result<u64, ProtoError> {
        let Some(group) = self
            .member_of
            .get(&member)
            .and_then(|name| self.groups.get_mut(name))
        else {
            return Err(ProtoError::not_a_group_member());
        };
        for &seq in seqs {
            let done = seq < group.acked_below || group.acked.contains(&seq);
            let held = group.out.get(&seq).is_some_and(|out| out.member == member);
            if !done && !held && !group.again.contains_key(&seq) {
                return Err(ProtoError::malformed(format!(
                    "seq {seq} is not held by this member: it was never delivered to it, or went to another member after --ack-timeout"
                )));
            }
        }
        let mut acked = 0;
        for &seq in seqs {
            if group.take_out(seq).is_some() || group.again.remove(&seq).is_some() {
                group.acked.insert(seq);
                acked += 1;
            }
        }
        while group.acked.remove(&group.acked_below) {
            group.acked_below += 1;
        }
        group.dirty |= acked > 0;
        Ok(acked)
    }

    /// Windows held past the ack timeout at `now` go to be delivered again.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for group in self.groups.values_mut() {
            let expired: Vec<u64> = group
                .out
                .iter()
                .filter(|(_, out)| out.deadline <= now)
                .map(|(&seq, _)| seq)
                .collect();
            for seq in expired {
                if let Some(out) = group.take_out(seq) {
                    group.again.insert(seq, out.delivery);
                }
            }
        }
    }

    /// When a held window next reaches its ack timeout.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.groups
            .values()
            .flat_map(|g| g.out.values().map(|out| out.deadline))
            .min()
    }

    /// Hands windows to members with room: first those to deliver again, then the log's new
    /// ones up to `log_end`, each to the next member in turn.
    pub fn poll_deliveries(&mut self, now: Timestamp, log_end: u64) -> Vec<Delivery> {
        let deadline = Timestamp::from_millis(now.as_millis().saturating_add(self.ack_timeout_ms));
        let mut deliveries = Vec::new();
        for group in self.groups.values_mut() {
            group.deliver(deadline, log_end, &mut deliveries);
        }
        deliveries
    }

    /// The durable state of every group that changed since the last call, for the next batch.
    pub fn take_dirty(&mut self) -> Vec<GroupRecord> {
        self.groups
            .iter_mut()
            .filter(|(_, g)| g.dirty)
            .map(|(name, g)| {
                g.dirty = false;
                GroupRecord {
                    name: name.clone(),
                    first: g.first,
                    acked_below: g.acked_below,
                    acked: g.acked.iter().copied().collect(),
                    next: g.next,
                }
            })
            .collect()
    }

    /// Each group, for `stats`.
    pub fn stats(&self, log_end: u64) -> Vec<GroupStats> {
        self.groups
            .iter()
            .map(|(name, g)| GroupStats {
                name: name.clone(),
                members: g.members.len() as u64,
                pending: (g.out.len() + g.again.len()) as u64,
                acked: g.acked_below - g.first + g.acked.len() as u64,
                redelivered: g.redelivered,
                lag: log_end.saturating_sub(g.next),
            })
            .collect()
    }
}

impl Group {
    fn deliver(&mut self, deadline: Timestamp, log_end: u64, deliveries: &mut Vec<Delivery>) {
        loop {
            let seq = match self.again.first_key_value() {
                Some((&seq, _)) => seq,
                None if self.next < log_end => self.next,
                None => return,
            };
            let Some(member) = self.next_member() else {
                return;
            };
            let delivery = match self.again.remove(&seq) {
                Some(before) => {
                    self.redelivered += 1;
                    before + 1
                }
                None => {
                    self.next += 1;
                    self.dirty = true;
                    1
                }
            };
            self.out.insert(
                seq,
                Out {
                    member,
                    delivery,
                    deadline,
                },
            );
            self.last_member = Some(member);
            if let Some(room) = self.members.get_mut(&member) {
                room.held += 1;
            }
            deliveries.push(Delivery {
                member,
                seq,
                delivery,
            });
        }
    }

    /// The member after the last one served that has room, if any has.
    fn next_member(&self) -> Option<MemberId> {
        let has_room =
            |(&member, room): (&MemberId, &Room)| (room.held < room.max).then_some(member);
        let after = self.last_member.map_or(0, |m| m.saturating_add(1));
        self.members
            .range(after..)
            .chain(self.members.range(..after))
            .find_map(has_room)
    }

    /// Takes `seq` back from the member holding it.
    fn take_out(&mut self, seq: u64) -> Option<Out> {
        let out = self.out.remove(&seq)?;
        if let Some(room) = self.members.get_mut(&out.member) {
            room.held = room.held.saturating_sub(1);
        }
        Some(out)
    }
}

//! Which partition a window belongs to, and where a partition keeps its keys.

use std::ops::Range;

/// The partition of a window with `key`, out of `count`.
///
/// xxh3 is fixed by its specification, so every node and every release agrees on it (std's
/// hasher may change between Rust versions and is seeded per process).
pub fn partition_of(key: Option<&str>, count: u32) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64(key.unwrap_or("").as_bytes());
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// How a partitioned namespace names its partitions' namespaces, as recorded with its number
/// of partitions when the namespace is made (a namespace keeps its layout for life: the names
/// are where its data is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionLayout {
    /// Partition `i` of `NS` is `NS.i` (namespaces made before the spread layout). On a Redis
    /// Cluster their hash tags fall on the masters by chance: 6 partitions over 3 masters are
    /// 2 / 2 / 2 only one time in eight.
    Plain,
    /// Partition `i` of `NS` is `NS.i~t`, `t` the first number from 0 that puts the
    /// namespace's hash tag (`wn:NS.i~t`, see [`slot_of`]) in the middle half of the `i`-th of
    /// `count` equal ranges of the cluster's 16384 slots. A cluster whose masters hold equal
    /// runs of slots (what `redis-cli --cluster create` makes) then holds `count / masters`
    /// partitions on every master when `count` is a multiple of `masters` (the middle half
    /// keeps clear of where the masters' runs and the ranges may differ by a slot).
    Spread,
}

/// The hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Redis Cluster slot of every key of `namespace`: its keys are `{wn:NS}:...`, so the slot
/// is CRC16 (XMODEM) of the hash tag `wn:NS`, modulo [`SLOTS`], as Redis computes it.
pub fn slot_of(namespace: &str) -> u16 {
    let tag = format!("wn:{namespace}");
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS
}

/// How many tag numbers [`PartitionLayout::Spread`] tries before it takes the whole range
/// instead of its middle half (then the first number in the range; past that, 0).
/// With the middle half of one of `count` ranges a try lands with odds `1 / (2 count)`: a few
/// hundred tries a partition for the counts a namespace has (each partition is a lease and a
/// connection per node), and a bound on a node's start with thousands (a try is one CRC over a
/// few digits). Part of the layout: a namespace's names are computed again at every start, so
/// changing this (or the search) moves existing partitions; the names are pinned in a test.
const SPREAD_TRIES: u32 = 1 << 14;

impl PartitionLayout {
    /// The namespaces of all `count` partitions of `namespace`, partition 0 first.
    pub fn namespaces(self, namespace: &str, count: u32) -> Vec<String> {
        (0..count)
            .map(|partition| self.namespace_of(namespace, partition, count))
            .collect()
    }

    /// The namespace partition `partition` of `count` in `namespace` keeps its keys in.
    pub fn namespace_of(self, namespace: &str, partition: u32, count: u32) -> String {
        match self {
            PartitionLayout::Plain => format!("{namespace}.{partition}"),
            PartitionLayout::Spread => {
                let prefix = format!("{namespace}.{partition}~");
                // The tag's CRC over the prefix once; each try adds its number's digits.
                let mut tagged = crc16::State::<crc16::XMODEM>::new();
                tagged.update(b"wn:");
                tagged.update(prefix.as_bytes());
                let slot = |t: u32| {
                    let mut state = tagged;
                    state.update(itoa::Buffer::new().format(t).as_bytes());
                    u32::from(state.get() % SLOTS)
                };
                let (lo, hi) = slot_range(partition, count);
                let quarter = (hi - lo) / 4;
                let first =
                    |range: Range<u32>| (0..SPREAD_TRIES).find(|&t| range.contains(&slot(t)));
                // Below 4 slots wide the middle half is the whole range: one pass.
                let t = first((lo + quarter)..(hi - quarter))
                    .or_else(|| (quarter > 0).then(|| first(lo..hi)).flatten())
                    .unwrap_or(0);
                format!("{prefix}{t}")
            }
        }
    }
}

/// The `partition`-th of `count` equal ranges of the slots, `lo..hi` (never empty: with more
/// partitions than slots, partitions share a slot).
fn slot_range(partition: u32, count: u32) -> (u32, u32) {
    let slots = u64::from(SLOTS);
    let count = u64::from(count.max(1));
    let partition = u64::from(partition) % count;
    let lo = partition * slots / count;
    let hi = ((partition + 1) * slots / count).max(lo + 1);
    (lo as u32, hi as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Pinned values, from Python's `xxhash` package (an independent implementation of
        // xxh3-64): a change of the hash would move every key of a running namespace.
        let pinned: Vec<u32> = ["k0", "k1", "k2", "k3", "user-42"]
            .iter()
            .map(|k| partition_of(Some(k), 8))
            .collect();
        assert_eq!(pinned, [3, 5, 1, 2, 5]);
        assert_eq!(
            partition_of(None, 4),
            2,
            "unkeyed events: the empty key's partition"
        );
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_of(Some(&format!("key-{i}")), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "4000 keys spread over 4 partitions: {counts:?}"
        );
        assert_eq!(partition_of(Some("any"), 1), 0);
        assert_eq!(
            partition_of(Some("any"), 0),
            0,
            "no partitions is read as one"
        );
    }

    #[test]
    fn partition_i_of_namespace_ns_is_namespace_ns_dot_i_in_the_plain_layout() {
        assert_eq!(
            PartitionLayout::Plain.namespace_of("orders", 3, 6),
            "orders.3"
        );
    }

    #[test]
    fn slots_are_what_redis_computes() {
        // Redis's own examples: the cluster spec's CRC16 XMODEM of "123456789" is 0x31C3;
        // `CLUSTER KEYSLOT somekey` is 11058 and `CLUSTER KEYSLOT {hash_tag}x` 2515 in its docs.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31c3
        );
        assert_eq!(keyslot("somekey"), 11058);
        assert_eq!(keyslot("hash_tag"), 2515);
        assert_eq!(slot_of("orders"), keyslot("wn:orders"));
        assert_eq!(slot_of(""), keyslot("wn:"));
    }

    #[test]
    fn spread_names_are_pinned() {
        // The names existing namespaces' data lives under: computed by an independent
        // implementation (Python, the bit-by-bit CRC16 of the cluster spec). A change here
        // strands every spread namespace's partitions.
        let names = |namespace, count| -> Vec<String> {
            (0..count)
                .map(|p| PartitionLayout::Spread.namespace_of(namespace, p, count))
                .collect()
        };
        assert_eq!(
            names("clustered", 6),
            [
                "clustered.0~1",
                "clustered.1~3",
                "clustered.2~2",
                "clustered.3~10",
                "clustered.4~10",
                "clustered.5~0"
            ]
        );
        assert_eq!(
            names("orders", 3),
            ["orders.0~3", "orders.1~5", "orders.2~2"]
        );
    }

    /// CRC16 XMODEM written out bit by bit, as the cluster specification gives it: an
    /// independent check of the crate's table-driven one.
    fn keyslot(tag: &str) -> u16 {
        let mut crc: u16 = 0;
        for &b in tag.as_bytes() {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc % SLOTS
    }

    #[test]
    fn the_spread_layout_puts_partition_i_in_the_middle_of_the_i_th_range_of_slots() {
        for count in [2, 3, 6, 7, 12, 100] {
            for namespace in ["orders", "bench-4242-cluster", "a.b~c", ""] {
                let names: Vec<String> = (0..count)
                    .map(|p| PartitionLayout::Spread.namespace_of(namespace, p, count))
                    .collect();
                for (p, name) in (0..count).zip(&names) {
                    assert!(name.starts_with(&format!("{namespace}.{p}~")), "{name}");
                    let (lo, hi) = slot_range(p, count);
                    let quarter = (hi - lo) / 4;
                    let slot = u32::from(slot_of(name));
                    assert!(
                        (lo + quarter..hi - quarter).contains(&slot),
                        "partition {p} of {count} in {namespace:?}: {name} is on slot {slot}, not in the middle of {lo}..{hi}"
                    );
                    assert_eq!(
                        PartitionLayout::Spread.namespace_of(namespace, p, count),
                        *name,
                        "the same name every time"
                    );
                }
                // Masters with equal runs of slots, as `redis-cli --cluster create` makes them
                // (its first of 3 ends at 5460, its second at 10922).
                for masters in [2u32, 3].into_iter().filter(|m| count % m == 0) {
                    let mut per_master = vec![0u32; masters as usize];
                    for name in &names {
                        let slot = u32::from(slot_of(name));
                        per_master[(slot * masters / u32::from(SLOTS)) as usize] += 1;
                    }
                    assert!(
                        per_master.iter().all(|&n| n == count / masters),
                        "{count} partitions over {masters} masters: {per_master:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn more_partitions_than_slots_still_get_names() {
        let count = u32::from(SLOTS) * 2;
        let name = PartitionLayout::Spread.namespace_of("ns", count - 1, count);
        assert!(name.starts_with("ns.32767~"), "{name}");
        assert_eq!(slot_range(count - 1, count), (16383, 16384));
    }
}

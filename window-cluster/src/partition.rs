//! Which partition a window belongs to, and where a partition keeps its keys.

/// The partition of a window with `key`, out of `count`.
///
/// xxh3 is fixed by its specification, so every node and every release agrees on it (std's
/// hasher may change between Rust versions and is seeded per process).
pub fn partition_of(key: Option<&str>, count: u32) -> u32 {
    let hash = xxhash_rust::xxh3::xxh3_64(key.unwrap_or("").as_bytes());
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// The namespace partition `partition` of `namespace` keeps its keys in.
pub fn namespace_of(namespace: &str, partition: u32) -> String {
    format!("{namespace}.{partition}")
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
    fn partition_i_of_namespace_ns_is_namespace_ns_dot_i() {
        assert_eq!(namespace_of("orders", 3), "orders.3");
    }
}

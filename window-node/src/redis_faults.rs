//! Which failures of a Redis holding the node outlives, and which stop it.
//!
//! Everything a Redis holder knows is in Redis, so a holding that fails because Redis went away,
//! refused a write or fenced it (a newer holder), or because its lease lapsed, ends: its driver
//! is dropped, and the node contends again and recovers afresh when it holds the lease next
//! (`serve::serve_redis`, `partitions::keep_partition`). What Redis cannot mend stops the process:
//! a namespace lost or replaced (never started over), a record that does not decode, a batch the
//! store refuses as broken, a driver that panicked or did not stop: a node that carried on would
//! only meet them again, each time at the cost of a recovery and an epoch.

use window_store::StoreError;

use crate::driver::{DriverError, DriverStopped};

/// Whether a store error is one Redis may mend (reached again, memory freed, a newer holder).
fn mendable_store(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Unreachable(_) | StoreError::Backend(_) | StoreError::Fenced { .. }
    )
}

/// Whether a holding whose driver stopped by itself this way may be stepped down from and
/// taken again later.
pub fn mendable(stopped: &DriverStopped) -> bool {
    match stopped {
        DriverStopped::Failed(DriverError::LeaseLapsed) => true,
        DriverStopped::Failed(DriverError::Store(error)) => mendable_store(error),
        DriverStopped::Unexpectedly | DriverStopped::Panicked(_) | DriverStopped::TooSlow => false,
    }
}

/// Whether `error` (starting a holding: opening the store, recovering) is one Redis may mend.
pub fn mendable_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<StoreError>()
            .is_some_and(mendable_store)
            || cause.downcast_ref::<DriverStopped>().is_some_and(mendable)
    })
}

/// Whether `error` (or what caused it) is a Redis namespace lost or replaced: never retried.
pub fn namespace_lost(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::NamespaceLost { .. })
        ) || matches!(
            cause.downcast_ref::<DriverError>(),
            Some(DriverError::Store(StoreError::NamespaceLost { .. }))
        ) || matches!(
            cause.downcast_ref::<DriverStopped>(),
            Some(DriverStopped::Failed(DriverError::Store(
                StoreError::NamespaceLost { .. }
            )))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_may_mend_what_it_refused_but_not_what_is_broken() {
        let unreachable = StoreError::Unreachable("connection refused".into());
        let stopped = |e: StoreError| DriverStopped::Failed(DriverError::Store(e));
        assert!(mendable(&stopped(unreachable.clone())));
        assert!(mendable(&stopped(StoreError::Backend("OOM".into()))));
        assert!(mendable(&stopped(StoreError::Fenced {
            epoch: 1,
            highest: 2
        })));
        assert!(mendable(&DriverStopped::Failed(DriverError::LeaseLapsed)));
        assert!(!mendable(&stopped(StoreError::InvalidBatch(
            "broken".into()
        ))));
        assert!(!mendable(&stopped(StoreError::NamespaceLost {
            namespace: "ns".into(),
            reason: "wiped".into(),
        })));
        assert!(!mendable(&DriverStopped::Panicked("bug".into())));
        let wrapped = anyhow::Error::new(unreachable).context("recovering partition 3");
        assert!(mendable_error(&wrapped) && !namespace_lost(&wrapped));
        let lost = anyhow::Error::new(stopped(StoreError::NamespaceLost {
            namespace: "ns".into(),
            reason: "wiped".into(),
        }))
        .context("partition 0 stopped");
        assert!(namespace_lost(&lost) && !mendable_error(&lost));
    }
}

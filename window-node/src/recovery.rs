//! Opening a store: the recovered state, and one log line saying what it held.

use window_core::EngineConfig;
use window_store::{StoreError, WindowStore};

/// Restores the engine from `store` (or starts an empty one) and logs what was recovered.
pub fn recover(
    store: &mut dyn WindowStore,
    config: EngineConfig,
) -> Result<window_store::Opened, StoreError> {
    let started = std::time::Instant::now();
    let opened = window_store::open(store, config)?;
    let stats = opened.engine.stats();
    tracing::info!(
        open_windows = stats.open_windows,
        buffered_events = stats.buffered_events,
        next_seq = opened.next_seq,
        remembered_requests = opened.requests.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the open state from the store"
    );
    Ok(opened)
}

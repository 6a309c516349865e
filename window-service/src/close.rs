//! `close`: which window an id (with its size and key) names, and the protocol's errors.

use window_core::{
    CloseError, ClosedWindow, Engine, IdFrame, SizeMs, WindowId, WindowSelector, WindowSpec,
};
use window_proto::ProtoError;

/// Closes the window `window_id` (of `size` and `key`, when given), with the protocol's errors.
pub(crate) fn close_window(
    engine: &mut Engine,
    frame: IdFrame,
    window_id: WindowId,
    size: Option<SizeMs>,
    key: Option<&str>,
) -> Result<ClosedWindow, ProtoError> {
    let start = match size {
        Some(size) => WindowSpec { size, frame }.start_of(window_id).ok_or_else(|| {
            ProtoError::NotOpen(format!(
                "no open window {window_id} of size {size} ms: {window_id} is not a window of that size"
            ))
        })?,
        None => frame
            .start_of(window_id)
            .ok_or_else(|| ProtoError::NotOpen(format!("no open window {window_id}")))?,
    };
    let selector = WindowSelector { start, size, key };
    engine.close(selector).map_err(|e| match e {
        CloseError::NotOpen => ProtoError::NotOpen(format!(
            "no open window {window_id}{}{}: it was never opened, or was already closed",
            size.map(|s| format!(" of size {s} ms")).unwrap_or_default(),
            key.map(|k| format!(" with key {k:?}")).unwrap_or_default(),
        )),
        CloseError::Ambiguous(windows) => ProtoError::malformed(format!(
            "{} open windows have id {window_id}: give {} to choose one of {}",
            windows.len(),
            if windows.iter().all(|w| w.size == windows[0].size) {
                "key"
            } else {
                "window_size_ms (and key)"
            },
            windows
                .iter()
                .map(|w| match &w.key {
                    Some(k) => format!("size {} key {k:?}", w.size),
                    None => format!("size {} no key", w.size),
                })
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

//! The `window-node` binary for the tests of other crates (a client's, say), which cargo does
//! not hand `CARGO_BIN_EXE_window-node`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `WINDOW_NODE_BIN` when set; otherwise `window-node` beside the running test's target
/// directory, built once with `cargo build -p window-node` when it is not there yet.
pub fn window_node_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("WINDOW_NODE_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<test> -> target/<profile>/window-node
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("a test binary under target/<profile>/deps");
        let path = profile_dir.join("window-node");
        if !path.exists() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "window-node", "--bin", "window-node"])
                .status()
                .expect("running cargo build -p window-node");
            assert!(status.success(), "cargo build -p window-node failed");
        }
        path
    })
    .clone()
}

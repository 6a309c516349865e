//! The progress bar on stderr: shown only when stderr is a terminal and every input is a file
//! of known size; bad-line reports are printed above it.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over the input's bytes, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes when stderr is a terminal and the size is known (files, not
    /// stdin); otherwise nothing is drawn.
    pub fn new(total: Option<u64>) -> Progress {
        Progress::with(total, std::io::stderr().is_terminal())
    }

    fn with(total: Option<u64>, terminal: bool) -> Progress {
        let bar = total.filter(|_| terminal).map(|total| {
            let bar = ProgressBar::with_draw_target(
                Some(total),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "[{bar:30}] {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar }
    }

    /// `bytes` more of the input are done.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// Writes `line` to stderr, above the bar when there is one.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Whether a bar is drawn.
    #[cfg(test)]
    fn shown(&self) -> bool {
        self.bar.is_some()
    }
}

impl Drop for Progress {
    /// The bar leaves the terminal with the run, however it ends, before the summary or the
    /// error is written.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_only_for_a_terminal_and_a_known_size() {
        assert!(Progress::with(Some(10), true).shown());
        assert!(!Progress::with(None, true).shown());
        assert!(!Progress::with(Some(10), false).shown());
    }
}

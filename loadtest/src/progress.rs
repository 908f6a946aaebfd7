//! Progress bars for long runs, drawn on stderr and only when stderr is a terminal (so logs,
//! pipes and tests see nothing). Counting is one atomic add per read batch.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar of `done / total` for one run, cleared when dropped; threads share it in an
/// `Arc`.
#[derive(Debug)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar labelled `label` counting up to `total` `unit`s (hidden off a terminal).
    pub fn new(label: &str, total: u64, unit: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(8));
        let template = format!(
            "{{prefix:>18}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} {{per_sec:0}} eta {{eta}}"
        );
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Progress(bar)
    }

    /// Counts `n` more done.
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

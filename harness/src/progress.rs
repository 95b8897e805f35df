//! Progress for long steps: a spinner with elapsed time on a terminal,
//! nothing when stderr is not one (CI logs get the `tracing` lines instead).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// One long-running step shown to the user.
pub struct Step {
    bar: ProgressBar,
    started: Instant,
}

impl Step {
    /// Starts showing `message` with a spinner and the elapsed time.
    pub fn start(message: impl Into<String>) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}")
                .expect("the spinner template is valid"),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// Replaces the message, keeping the clock running.
    pub fn update(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Time since the step started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Removes the spinner and returns the step's duration.
    pub fn finish(self) -> Duration {
        self.bar.finish_and_clear();
        self.started.elapsed()
    }
}

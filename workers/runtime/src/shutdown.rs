//! Graceful shutdown: one signal that every task listens to. SIGTERM or
//! SIGINT trips it; the worker finishes its batch, commits, and exits.

use tokio::sync::watch;

/// A handle that trips the shutdown; cheap to clone.
#[derive(Clone, Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A handle that waits for the shutdown; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener, not yet tripped.
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Shutdown(receiver))
}

impl Trigger {
    /// Asks every listener to stop.
    pub fn trip(&self) {
        self.0.send_replace(true);
    }

    /// Trips the shutdown on SIGTERM or SIGINT, from a background task.
    pub fn on_signals(&self) {
        let trigger = self.clone();
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(term) => term,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the worker");
                    let _ = tokio::signal::ctrl_c().await;
                    trigger.trip();
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
            }
            trigger.trip();
        });
    }
}

impl Shutdown {
    /// Whether the shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the shutdown is asked for (or the trigger is dropped).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trip() {
        let (trigger, first) = channel();
        let mut second = first.clone();
        assert!(!first.is_requested());
        trigger.trip();
        second.requested().await;
        assert!(first.is_requested());
    }
}

//! Progress of long transfers on a terminal; silent when stderr is piped or redirected.

use pgvigil_core::report::human_bytes;
use pgvigil_core::restore::Progress;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A progress line that updates while it lives.
pub struct Line {
    /// Shared byte counter (None when not on a terminal).
    counter: Option<Progress>,
    /// The task redrawing the line.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a progress line for `what` (`total` bytes expected) if stderr is a terminal.
pub fn show(what: String, total: u64) -> Line {
    if !std::io::stderr().is_terminal() {
        return Line { counter: None, task: None };
    }
    let counter = Progress::default();
    let c = counter.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let done = c.load(Ordering::Relaxed);
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            let pct = if total > 0 {
                format!(" ({:.0}%)", done as f64 * 100.0 / total as f64)
            } else {
                String::new()
            };
            eprint!(
                "\r\x1b[K{what}: {} of {}{pct}, {}/s",
                human_bytes(done),
                human_bytes(total),
                human_bytes(rate as u64)
            );
            let _ = std::io::stderr().flush();
        }
    });
    Line {
        counter: Some(counter),
        task: Some(task),
    }
}

impl Line {
    /// The counter to hand to the transfer.
    pub fn counter(&self) -> Option<Progress> {
        self.counter.clone()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }
}

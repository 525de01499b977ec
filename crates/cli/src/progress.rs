//! The terminal side of the operator layer's [`Observer`]: notes on stderr, and a progress line
//! for long transfers that updates while it lives (silent when stderr is not a terminal).

use crate::render::human_bytes;
use pgvigil_core::operator::prelude::Progress;
use pgvigil_core::operator::Observer;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shows progress and notes on stderr.
#[derive(Debug, Default)]
pub struct Terminal {
    /// The task redrawing the current progress line, if any.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Observer for Terminal {
    fn begin(&self, label: &str, total: u64) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let counter = Progress::default();
        let c = counter.clone();
        let started = Instant::now();
        let what = crate::term::safe(label).into_owned();
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
        self.end();
        if let Ok(mut t) = self.task.lock() {
            *t = Some(task);
        }
        Some(counter)
    }

    fn end(&self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
            eprint!("\r\x1b[K");
        }
    }

    fn note(&self, line: &str) {
        self.end();
        say_err!("{line}");
    }
}

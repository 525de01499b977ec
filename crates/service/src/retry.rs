//! The one retry helper of both services: exponential backoff between attempts, a cancellable
//! wait, and a loop that tries until success or shutdown.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exponential backoff between retries after failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Consecutive failures so far.
    failures: u32,
}

impl Backoff {
    /// Backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: 0 }
    }

    /// The delay before the next retry; each call doubles it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.base.saturating_mul(1u32 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Waits `d` unless cancelled first; returns false when cancelled.
pub async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Runs `attempt` until it succeeds, calling `on_failure` with each error and the delay before
/// the next try. `None` when shutdown came first.
pub async fn until_ok<T, E, F, Fut>(
    mut backoff: Backoff,
    cancel: &CancellationToken,
    mut attempt: F,
    on_failure: impl Fn(&E, Duration),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        match attempt().await {
            Ok(v) => return Some(v),
            Err(e) => {
                let d = backoff.next_delay();
                on_failure(&e, d);
                if !sleep_or_cancel(d, cancel).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(300));
        let got: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![30, 60, 120, 240, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_with_backoff_and_stops_on_shutdown() {
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let delays = std::sync::Mutex::new(Vec::new());
        let got = until_ok(
            Backoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            &CancellationToken::new(),
            || {
                tries += 1;
                let t = tries;
                async move {
                    if t < 4 {
                        Err("down")
                    } else {
                        Ok(t)
                    }
                }
            },
            |_, d| delays.lock().unwrap().push(d.as_secs()),
        )
        .await;
        assert_eq!(got, Some(4));
        assert_eq!(*delays.lock().unwrap(), vec![5, 10, 20]);
        assert_eq!(start.elapsed(), Duration::from_secs(35));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let never: Option<()> = until_ok(
            Backoff::new(Duration::from_secs(5), Duration::from_secs(5)),
            &cancel,
            || async { Err::<(), _>("down") },
            |_, _| {},
        )
        .await;
        assert_eq!(never, None);
    }
}

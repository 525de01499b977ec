//! Telling people: webhooks (`NOTIFY_WEBHOOK_URL`) for conditions that need someone — a backup
//! failing, a failed verification, verifications that keep not running, no fresh backup, a size or
//! table anomaly — and once more when each clears; and a heartbeat (`HEARTBEAT_URL`) after every
//! successful run, so that an outside service notices when pgvigil itself is gone.
//!
//! Delivery happens on a task of its own: a slow or dead receiver never delays or fails a backup.
//! Each condition is sent once when it starts and once when it clears, never again in between.
//! Messages are retried with backoff for about a minute, then dropped with a warning. Bodies are
//! built from pgvigil's own redacted sentences; the URLs themselves are never logged.

use chrono::Utc;
use pgvigil_core::infra::config::{NotifyConfig, Role};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Something that needs attention until it clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// Backups fail.
    BackupFailing,
    /// The newest verification failed (the backup is bad).
    VerificationFailed,
    /// Verification could not run several times in a row.
    VerificationNotRunning,
    /// No successful run for twice the interval.
    Stale,
    /// The newest backup's size moved far from the recent ones.
    SizeAnomaly,
    /// A table lost most of its rows.
    TableAnomaly,
    /// Storage holds a backup dated in the future (a wrong clock, or someone who can write to
    /// the bucket); it is left alone and counts for nothing.
    FutureDated,
    /// A backup retention keeps is gone from storage, or not the size its manifest records.
    Absent,
    /// A destination did not get the newest backup (with `SECONDARY_*`); catch-up copies it
    /// there once it can.
    DestinationBehind,
    /// A backup no trusted backup service signed was refused (`BACKUP_TRUSTED_KEYS`): someone
    /// may have written to the bucket.
    Untrusted,
}

impl Condition {
    fn event(self) -> &'static str {
        match self {
            Condition::BackupFailing => "backup_failed",
            Condition::VerificationFailed => "verification_failed",
            Condition::VerificationNotRunning => "verification_could_not_run",
            Condition::Stale => "backup_stale",
            Condition::SizeAnomaly => "size_anomaly",
            Condition::TableAnomaly => "table_anomaly",
            Condition::FutureDated => "future_dated_backup",
            Condition::Untrusted => "untrusted_backup",
            Condition::Absent => "backup_missing",
            Condition::DestinationBehind => "destination_behind",
        }
    }
}

/// A message's `state`: a condition starts, ends, or plain news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum State {
    /// A condition started.
    Firing,
    /// It ended.
    Resolved,
    /// A success, with `NOTIFY_ON_SUCCESS`.
    Info,
}

enum Message {
    Raise(Condition, String),
    Clear(Condition),
    Info(String),
    Heartbeat,
}

/// A handle the jobs use; cheap to clone. Without webhooks or a heartbeat it does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Message>>,
    on_success: bool,
    /// The delivery task, for [`Notifier::finish`].
    task: Option<Arc<Mutex<Option<JoinHandle<()>>>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("enabled", &self.tx.is_some()).finish()
    }
}

impl Notifier {
    /// Starts the delivery task for `service` (`backup`/`verify`) under `prefix`.
    pub fn start(cfg: &NotifyConfig, role: Role, prefix: &str, cancel: &CancellationToken) -> Self {
        let service = role.name();
        if cfg.webhooks.is_empty() && cfg.heartbeat.is_none() {
            return Self::default();
        }
        let (tx, rx) = mpsc::channel(1024);
        let delivery = Delivery {
            webhooks: cfg.webhooks.clone(),
            heartbeat: cfg.heartbeat.clone(),
            service,
            prefix: prefix.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        };
        let task = tokio::spawn(delivery.run(rx, cancel.clone()));
        Self {
            tx: Some(tx),
            on_success: cfg.on_success,
            task: Some(Arc::new(Mutex::new(Some(task)))),
        }
    }

    /// Lets the messages sent so far be delivered (retries included) for at most `limit`, for a
    /// process about to exit. Needs every clone of this notifier gone.
    pub async fn finish(mut self, limit: Duration) {
        self.tx = None;
        let task = self
            .task
            .and_then(|t| t.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        if let Some(task) = task {
            if tokio::time::timeout(limit, task).await.is_err() {
                warn!("notifications still undelivered after {}s were dropped", limit.as_secs());
            }
        }
    }

    fn send(&self, m: Message) {
        if let Some(tx) = &self.tx {
            if tx.try_send(m).is_err() {
                warn!("a notification was dropped: the webhook receiver is too slow or unreachable");
            }
        }
    }

    /// `condition` holds, with a sentence saying why (sent once, until it clears).
    pub fn raise(&self, condition: Condition, text: impl Into<String>) {
        self.send(Message::Raise(condition, text.into()));
    }

    /// `condition` no longer holds (a "recovered" message if it had been raised).
    pub fn clear(&self, condition: Condition) {
        self.send(Message::Clear(condition));
    }

    /// A successful run: the heartbeat, and a message when `NOTIFY_ON_SUCCESS` is set.
    pub fn success(&self, text: impl Into<String>) {
        self.send(Message::Heartbeat);
        if self.on_success {
            self.send(Message::Info(text.into()));
        }
    }
}

struct Delivery {
    webhooks: Vec<SecretString>,
    heartbeat: Option<SecretString>,
    service: &'static str,
    prefix: String,
    client: reqwest::Client,
}

/// Attempts per message: the waits between them add up to about a minute.
const ATTEMPTS: u32 = 6;

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<Message>, cancel: CancellationToken) {
        let mut active: BTreeMap<Condition, String> = BTreeMap::new();
        loop {
            let m = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                () = cancel.cancelled() => break,
            };
            let body = match m {
                Message::Heartbeat => {
                    if let Some(url) = &self.heartbeat {
                        self.deliver(url, None, "heartbeat", &cancel).await;
                    }
                    continue;
                }
                Message::Raise(c, text) => {
                    if active.contains_key(&c) {
                        continue;
                    }
                    active.insert(c, text.clone());
                    self.body(c.event(), State::Firing, &text)
                }
                Message::Clear(c) => {
                    let Some(was) = active.remove(&c) else { continue };
                    self.body(c.event(), State::Resolved, &format!("recovered: {was}"))
                }
                Message::Info(text) => self.body("success", State::Info, &text),
            };
            for url in &self.webhooks {
                self.deliver(url, Some(&body), "notification", &cancel).await;
            }
        }
    }

    fn body(&self, event: &str, state: State, text: &str) -> serde_json::Value {
        let icon = match state {
            State::Firing => "🔴",
            State::Resolved => "✅",
            State::Info => "ℹ️",
        };
        json!({
            "text": format!("{icon} pgvigil {} ({}): {text}", self.service, self.prefix),
            "content": format!("{icon} pgvigil {} ({}): {text}", self.service, self.prefix),
            "event": event,
            "state": state,
            "service": self.service,
            "prefix": self.prefix,
            "message": text,
            "at": Utc::now().to_rfc3339(),
        })
    }

    /// POSTs `body` (or GETs, for the heartbeat) with retries; gives up quietly after a minute.
    async fn deliver(&self, url: &SecretString, body: Option<&serde_json::Value>, what: &str, cancel: &CancellationToken) {
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let request = match body {
                Some(b) => self.client.post(url.expose_secret()).json(b),
                None => self.client.get(url.expose_secret()),
            };
            match request.send().await {
                Ok(r) if r.status().is_success() => return,
                // A receiver that refuses the request itself (a deleted hook, a bad token) will
                // refuse it again.
                Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                    warn!(status = r.status().as_u16(), "a {what} was refused by its receiver; not retried");
                    return;
                }
                Ok(r) if attempt == ATTEMPTS => warn!(status = r.status().as_u16(), "a {what} could not be delivered; giving up"),
                Err(e) if attempt == ATTEMPTS => {
                    // The error text may contain the URL: only its kind is shown.
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "could not connect"
                    } else {
                        "failed"
                    };
                    warn!("a {what} could not be delivered ({kind}); giving up");
                }
                _ => {}
            }
            if attempt < ATTEMPTS {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

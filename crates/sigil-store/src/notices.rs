//! Registry-change notices between replicas. With PostgreSQL, a replica that commits a registry
//! change sends `NOTIFY`, and every replica listening moves its registry epoch, which empties its
//! read caches: a suspension made on one replica ends the tokens checked on another within
//! milliseconds, not at the caches' one-second bound (which still holds when a notice is lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;

/// The channel registry changes are announced on.
pub const CHANNEL: &str = "sigil_registry";
/// The statement that announces one (delivered when the sender's transaction ends).
pub const ANNOUNCE: &str = "NOTIFY sigil_registry";

/// Ends the listener when the last clone of the store is dropped.
#[derive(Debug)]
pub struct Listening(tokio::task::JoinHandle<()>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the channel, moving `epoch` on every notice and on every reconnection (changes may
/// have been missed meanwhile).
pub fn listen(url: String, epoch: Arc<AtomicU64>) -> Listening {
    Listening(tokio::spawn(async move {
        loop {
            if let Err(e) = follow(&url, &epoch).await {
                tracing::warn!(error = %e, "registry notices lost; caches fall back to their age bound");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

async fn follow(url: &str, epoch: &AtomicU64) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        epoch.fetch_add(1, Ordering::SeqCst);
        // `None`: the connection was lost; the next call reconnects and listens again.
        let _ = listener.try_recv().await?;
    }
}

//! The shutdown signal: a `watch` channel that turns `true` once, watched
//! by the listeners and every background task.

use tokio::sync::watch;

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

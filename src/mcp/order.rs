//! Keeping the order of a session's two connections where the gateway
//! can: a client that opens its `GET` stream and then posts a message
//! expects what the server sends on the stream in reply (a sampling or
//! elicitation request) to find the stream there. The two requests travel
//! on different connections, so a message can overtake the stream on the
//! way through; here a message waits, a bounded while, until the server
//! has answered the session's `GET` that is being opened.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::sessions::SessionKey;

/// The longest a message waits for its session's stream to open: past it,
/// the message goes on (a server that never answers the stream must not
/// stop the session).
const MAX_WAIT: Duration = Duration::from_millis(500);

/// The `GET` streams being opened, by session.
#[derive(Default)]
pub struct Opening {
    streams: Mutex<HashMap<SessionKey, watch::Sender<()>>>,
}

/// Held while a session's stream is being opened; dropping it (the server
/// answered, or the request failed) lets the session's messages go.
pub struct OpenGuard {
    opening: Arc<Opening>,
    session: SessionKey,
    sender: watch::Receiver<()>,
}

impl Opening {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, watch::Sender<()>>> {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A `GET` of `session` is on its way to the server.
    pub fn open(self: &Arc<Self>, session: SessionKey) -> OpenGuard {
        let (tx, rx) = watch::channel(());
        self.lock().insert(session, tx);
        OpenGuard {
            opening: self.clone(),
            session,
            sender: rx,
        }
    }

    /// What a message of `session` waits on, if its stream is being opened.
    pub fn wait(&self, session: SessionKey) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let mut rx = self.lock().get(&session)?.subscribe();
        Some(Box::pin(async move {
            // Ends when the guard drops the sender (or at the bound).
            let _ = tokio::time::timeout(MAX_WAIT, rx.changed()).await;
        }))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut streams = self.opening.lock();
        // Only our own: a later GET of the session may have replaced it.
        if streams
            .get(&self.session)
            .is_some_and(|tx| self.sender.same_channel(&tx.subscribe()))
        {
            streams.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionKey {
        let mut h = http::HeaderMap::new();
        h.insert("mcp-session-id", http::HeaderValue::from_static("s-1"));
        SessionKey::of(&h).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_waits_for_its_sessions_stream_to_open_but_not_forever() {
        let opening = Arc::new(Opening::default());
        assert!(
            opening.wait(session()).is_none(),
            "no stream opening: no wait"
        );

        let guard = opening.open(session());
        let wait = tokio::spawn(opening.wait(session()).unwrap());
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        drop(guard); // the server answered the GET
        wait.await.unwrap();
        assert!(opening.wait(session()).is_none());

        // A stream the server never answers holds a message for the bound.
        let _guard = opening.open(session());
        let started = tokio::time::Instant::now();
        opening.wait(session()).unwrap().await;
        assert_eq!(started.elapsed(), MAX_WAIT);
    }
}

//! The websocket transport: one upgraded connection, its frames answered in its dialect
//! (v1 or v2, see [`crate::protocol`]) and its pushes sent between replies. The HTTP layer
//! ([`crate::http`]) does the upgrade handshake and hands the connection here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::db::Db;
use crate::limits::ConnectionLimits;
use crate::live::{Control, Live};
use crate::protocol::{self, Dialect};
use crate::pubsub::Subscriber;
use crate::session::Session;

/// Longest a refused connection's leftover input is read (and dropped) after its close
/// frame, so that it gets the close frame rather than a TCP reset.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Websocket settings for a connection with `limits`. Small buffers: an idle connection
/// holds little memory (tungstenite's default is 128 KiB each way); larger messages grow
/// them while they last.
pub fn config(limits: &ConnectionLimits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
}

/// An accepted upgrade: who the client is so far, decided from its upgrade request.
pub struct Upgrade {
    pub peer: SocketAddr,
    pub dialect: Dialect,
    /// The access its upgrade request's token gave (anonymous: none yet).
    pub access: Access,
    /// Held while the connection is unauthenticated (`max_unauthenticated`).
    pub unauthenticated: Option<OwnedSemaphorePermit>,
    /// The settings in force when it upgraded, and their later changes (reloads).
    pub live: Arc<Live>,
    pub live_changes: watch::Receiver<Arc<Live>>,
}

/// Sends a close frame if the client takes it within a second; a client that stopped reading
/// does not get to hold the task.
async fn close<S>(sink: &mut S, code: CloseCode, reason: &'static str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
}

/// The key of a `{"pub": {"key": ...}}` frame.
fn push_key(frame: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(frame).ok()?;
    json.get("pub")?.get("key")?.as_str().map(str::to_string)
}

/// Reads and drops what a client still sends after its close frame (a websocket close, or
/// the binary protocol's `closing` frame), for at most
/// [`DRAIN_AFTER_CLOSE`] and `budget` bytes, so that closing the socket does not reset the
/// connection (a TCP reset would destroy the close frame on its way).
pub(crate) async fn drain<S: AsyncRead + Unpin>(stream: &mut S, budget: usize) {
    let mut buf = vec![0u8; 16 << 10];
    let mut left = budget;
    let _ = tokio::time::timeout(DRAIN_AFTER_CLOSE, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// One connection: requests are answered in order; pushes go out between replies, never
/// before the reply to the request that caused them.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    upgrade: Upgrade,
    db: Arc<Db>,
    control: &Arc<Control>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Upgrade {
        peer,
        dialect,
        access,
        mut unauthenticated,
        live,
        mut live_changes,
    } = upgrade;
    let limits = live.limits;
    let mut session = Session::new(live.auth.clone(), access, limits)
        .with_control(control.clone(), peer.ip().is_loopback());
    let (mut sink, mut incoming) = ws.split();

    let (tx, mut pushes) = mpsc::channel::<Arc<str>>(limits.push_queue);
    let me = Subscriber::new(db.pubsub().next_conn_id(), tx, limits.push_queue_bytes);
    tracing::debug!(conn = me.conn, ?dialect, "connected");
    let auth_deadline = tokio::time::Instant::now() + limits.auth_timeout;
    // After a reload took subscriptions away: how many queued pushes were queued before it,
    // and the keys whose pushes among them are no longer for this connection.
    let mut stale: Option<(usize, Vec<String>)> = None;

    /// Why a connection is being closed by the server.
    enum Ending {
        TooSlow,
        TooBig,
        AuthTimeout,
        /// A reload took the connection's access away.
        Revoked(&'static str),
    }

    // A send waits for the client to read. One that never does must not pin the task: every
    // send also ends when the connection is kicked for falling behind.
    let result = async {
        loop {
            let outgoing = tokio::select! {
                _ = shutdown.cancelled() => {
                    close(&mut sink, CloseCode::Away, "server shutting down").await;
                    return Ok(None);
                }
                _ = me.kick.cancelled() => break Ok(Some(Ending::TooSlow)),
                _ = tokio::time::sleep_until(auth_deadline), if unauthenticated.is_some() => {
                    break Ok(Some(Ending::AuthTimeout));
                }
                Ok(()) = live_changes.changed() => {
                    let live = live_changes.borrow_and_update().clone();
                    match protocol::reauthorize(&db, &me, &mut session, &live, &mut unauthenticated) {
                        Err(reason) => break Ok(Some(Ending::Revoked(reason))),
                        Ok(lost) => {
                            if !lost.is_empty() {
                                // Pushes of those keys already queued are dropped too.
                                stale = Some((pushes.len(), lost.clone()));
                            }
                            // v1 has no message a Ruby client would not take for a reply.
                            match dialect {
                                Dialect::V2 if !lost.is_empty() => {
                                    serde_json::json!({"unsubscribed": {"keys": lost, "reason": "forbidden"}})
                                        .to_string()
                                }
                                _ => continue,
                            }
                        }
                    }
                }
                frame = incoming.next() => {
                    let payload = match frame {
                        Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                        Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                        Some(Ok(Message::Close(_))) | None => return Ok(None),
                        Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
                        Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(e))) => {
                            tracing::debug!(conn = me.conn, error = %e, "message too big");
                            break Ok(Some(Ending::TooBig));
                        }
                        Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    };
                    let answer = protocol::answer(&db, &me, &mut session, dialect, &payload).await;
                    if !matches!(session.access(), Access::Anonymous) {
                        unauthenticated = None;
                    }
                    answer.to_string()
                }
                Some(push) = pushes.recv() => {
                    me.sent(&push);
                    if let Some((left, keys)) = &mut stale {
                        *left = left.saturating_sub(1);
                        let lost = push_key(&push).is_some_and(|k| keys.contains(&k));
                        if *left == 0 {
                            stale = None;
                        }
                        if lost {
                            continue;
                        }
                    }
                    push.to_string()
                }
            };
            tokio::select! {
                sent = sink.send(Message::text(outgoing)) => sent?,
                _ = me.kick.cancelled() => break Ok(Some(Ending::TooSlow)),
            }
        }
    }
    .await;
    db.pubsub().drop_connection(me.conn);
    drop(pushes);
    let result = match result {
        Ok(Some(ending)) => {
            let (code, reason) = match ending {
                Ending::TooSlow => {
                    tracing::warn!(
                        conn = me.conn,
                        "closing a subscriber that reads too slowly (its push queue is full)"
                    );
                    (CloseCode::Policy, "too slow: push queue full")
                }
                Ending::TooBig => (CloseCode::Size, "message too big"),
                Ending::AuthTimeout => (CloseCode::Policy, "authentication timeout"),
                Ending::Revoked(reason) => {
                    tracing::info!(
                        conn = me.conn,
                        reason,
                        "closing a connection after a config reload"
                    );
                    (CloseCode::Policy, reason)
                }
            };
            close(&mut sink, code, reason).await;
            // What the client still sends (the rest of a message too big, its close reply)
            // is read and dropped, so that the close frame arrives instead of a reset.
            if let Ok(mut ws) = sink.reunite(incoming) {
                drain(ws.get_mut(), 2 * limits.max_frame_bytes + (64 << 10)).await;
            }
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    tracing::debug!(conn = me.conn, "disconnected");
    result
}

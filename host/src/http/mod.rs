//! HTTP on the websocket listeners. hyper serves every accepted connection: a request with a
//! websocket upgrade is answered `101` and the connection handed to [`crate::ws`] (`/v2` is
//! the v2 dialect, any other path v1, as before); any other request is HTTP: the JSON API
//! under `/api/v1/` ([`api`]), its Server-Sent Events, `/metrics` ([`metrics`]), and the web
//! page at `/` ([`web`]).
//!
//! Like the websocket dialects, HTTP only translates: each route becomes one of the shared
//! commands of [`crate::cmd`], run through [`crate::protocol::start`] with the request's
//! token, and its answer (or error code) is rendered as JSON, CSV or HTTP status.

pub mod api;
pub mod metrics;
pub mod web;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use crate::auth::{Access, tokens_in_request};
use crate::db::Db;
use crate::live::Control;
use crate::protocol::Dialect;
use crate::ws::{self, Upgrade};

/// How long a client has to send a request's headers (its first, or the next on a kept-alive
/// connection, which is closed when idle this long).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of every answer: a whole buffer, or a stream (events).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every request of one connection shares.
pub struct Conn {
    pub peer: SocketAddr,
    /// Forced by a v2-only listener; otherwise chosen by the upgrade's path.
    pub dialect: Option<Dialect>,
    pub db: Arc<Db>,
    pub control: Arc<Control>,
    pub shutdown: CancellationToken,
}

/// A websocket upgrade answered `101`, waiting for hyper to hand over the connection.
type Pending = Arc<Mutex<Option<(OnUpgrade, Upgrade)>>>;

/// Serves one accepted connection (after TLS, if any) until it closes or the server shuts
/// down: HTTP requests (keep-alive), or one websocket after an upgrade.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    dialect: Option<Dialect>,
    db: Arc<Db>,
    control: &Arc<Control>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(Conn {
        peer,
        dialect,
        db,
        control: control.clone(),
        shutdown: shutdown.clone(),
    });
    let pending: Pending = Arc::default();
    let service = {
        let conn = conn.clone();
        let pending = pending.clone();
        service_fn(move |req| {
            let conn = conn.clone();
            let pending = pending.clone();
            async move { Ok::<_, Infallible>(handle(&conn, &pending, req).await) }
        })
    };
    let http = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(http);
    let served = tokio::select! {
        served = http.as_mut() => served,
        _ = shutdown.cancelled() => {
            // Requests in flight finish (event streams end on shutdown); then it closes.
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    let upgrade = pending.lock().ok().and_then(|mut p| p.take());
    let Some((on_upgrade, upgrade)) = upgrade else {
        return served.map_err(anyhow::Error::from);
    };
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let io = TokioIo::new(on_upgrade.await?);
    let config = ws::config(&upgrade.live.limits);
    let websocket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    ws::serve(websocket, upgrade, conn.db.clone(), control, shutdown).await
}

/// One request: a websocket upgrade, or a route.
async fn handle(conn: &Conn, pending: &Pending, req: Request<Incoming>) -> Response<Body> {
    if is_upgrade(&req) {
        return upgrade(conn, pending, req);
    }
    let path = req.uri().path().to_string();
    if path == "/metrics" {
        return metrics::serve(conn, &req);
    }
    if let Some(rest) = path.strip_prefix("/api/v1/") {
        let rest = rest.to_string();
        return api::serve(conn, req, &rest).await;
    }
    if req.method() == hyper::Method::GET
        && let Some(page) = web::serve(&path)
    {
        return page;
    }
    api::error_response(&crate::Error::UnknownRoute(path))
}

/// Whether the request asks for a websocket.
/// The access of the `Authorization: Bearer` tokens of `req` (only the header: a token in
/// an HTTP URL ends up in logs and browser history).
pub fn bearer_access<B>(live: &crate::live::Live, req: &Request<B>) -> crate::Result<Access> {
    let tokens = tokens_in_request(
        None,
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    live.auth.access_of(&tokens)
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// A plain-text answer with a status (refused upgrades).
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{body}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// Answers a websocket upgrade request: `101` with the accept key, or why not. A wrong
/// token is refused here (401); none at all leaves the connection anonymous until an
/// `auth` request, if there is room for one more (503 otherwise).
fn upgrade(conn: &Conn, pending: &Pending, mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| req.method() == hyper::Method::GET && version_ok) else {
        let mut response = text(
            StatusCode::BAD_REQUEST,
            "a websocket upgrade is a GET with Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    };
    let mut live_changes = conn.control.live();
    let live = live_changes.borrow_and_update().clone();
    let tokens = tokens_in_request(
        req.uri().query(),
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let Ok(access) = live.auth.access_of(&tokens) else {
        return text(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let unauthenticated = if matches!(access, Access::Anonymous) {
        match conn.control.unauthenticated().clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many unauthenticated connections",
                );
            }
        }
    } else {
        None
    };
    let dialect = conn
        .dialect
        .unwrap_or_else(|| Dialect::for_path(req.uri().path()));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let upgrade = Upgrade {
        peer: conn.peer,
        dialect,
        access,
        unauthenticated,
        live,
        live_changes,
    };
    if let Ok(mut p) = pending.lock() {
        *p = Some((on_upgrade, upgrade));
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

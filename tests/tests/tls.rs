//! wss://: a server with a certificate made at test time, a client trusting only that
//! certificate, and a token presented through the URL over the encrypted connection.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use komoku_tests::http::HttpRequest;
use komoku_tests::{TestServer, WAIT, token};
use serde_json::{Value as Json, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

/// A TLS server for "localhost" with auth on; returns it with the certificate (DER).
async fn tls_server() -> Result<(TestServer, rustls::pki_types::CertificateDer<'static>)> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let server = TestServer::start_with(|cfg| {
        cfg.tls = Some(komoku::tls::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
        cfg.auth.enabled = true;
        cfg.auth.tokens = vec![token("t", "tls-secret", [&["*"], &["*"], &["*"], &["*"]])];
    })
    .await?;
    // The files are read at start; the server no longer needs them.
    drop(dir);
    Ok((server, certified.cert.der().clone()))
}

fn connector(trusted: rustls::pki_types::CertificateDer<'static>) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    roots.add(trusted)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn request<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, req: Json) -> Result<Json>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(req.to_string())).await?;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("no reply")?
            .context("closed")??;
        if let Message::Text(t) = msg {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

#[tokio::test]
async fn a_wss_client_trusting_the_certificate_works() -> Result<()> {
    let (s, cert) = tls_server().await?;
    let addr = s.server.local_addr;
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector(cert.clone())?
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let url = format!("wss://localhost:{}/?token=tls-secret", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await?;
    assert_eq!(
        request(&mut ws, json!({"put": {"key": "secure", "value": 1}})).await?,
        json!("ack")
    );
    assert_eq!(
        request(&mut ws, json!({"get": {"key": "secure"}})).await?,
        json!(1)
    );

    // v2 over TLS, token in an auth request.
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector(cert)?
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let url = format!("wss://localhost:{}/v2", addr.port());
    let (mut v2, _) = tokio_tungstenite::client_async(url, tls).await?;
    assert_eq!(
        request(&mut v2, json!({"get": {"key": "secure"}})).await?,
        json!({"error": "unauthorized"})
    );
    assert_eq!(
        request(&mut v2, json!({"auth": {"token": "tls-secret"}})).await?,
        json!({"result": "ok"})
    );
    assert_eq!(
        request(&mut v2, json!({"get": {"key": "secure"}})).await?,
        json!({"result": 1})
    );
    Ok(())
}

#[tokio::test]
async fn plain_ws_and_untrusted_clients_are_refused() -> Result<()> {
    let (s, cert) = tls_server().await?;
    let addr = s.server.local_addr;
    // Plain websocket to a TLS listener: no upgrade.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/?token=tls-secret")),
    )
    .await?;
    assert!(plain.is_err(), "a plain ws:// connection was accepted");
    // A client trusting another certificate fails the handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector(other.cert.der().clone())?
        .connect(ServerName::try_from("localhost")?, tcp)
        .await;
    assert!(
        tls.is_err(),
        "a client trusting another certificate connected"
    );
    // The server still serves trusted clients afterwards.
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector(cert)?
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/?token=tls-secret", addr.port()),
        tls,
    )
    .await?;
    assert_eq!(
        request(&mut ws, json!({"ping": 1})).await?,
        json!({"pong": 1})
    );
    Ok(())
}

#[tokio::test]
async fn http_api_is_served_over_tls_with_the_bearer_token() -> Result<()> {
    let (s, cert) = tls_server().await?;
    let connector = connector(cert)?;
    let name = ServerName::try_from("localhost")?;
    let host = format!("localhost:{}", s.addr().port());
    let put = HttpRequest::new("PUT", "/api/v1/keys/secure.temp")
        .token("tls-secret")
        .body("19.5");
    let tls = connector
        .connect(name.clone(), TcpStream::connect(s.addr()).await?)
        .await?;
    let r = put.send_over(tls, &host).await?;
    assert_eq!(r.status, 200, "{r:?}");
    let tls = connector
        .connect(name.clone(), TcpStream::connect(s.addr()).await?)
        .await?;
    let r = HttpRequest::get("/api/v1/keys/secure.temp")
        .token("tls-secret")
        .send_over(tls, &host)
        .await?;
    assert_eq!(r.json()?["value"], 19.5, "{r:?}");
    // Without the token: 401, over TLS as in the clear.
    let tls = connector
        .connect(name, TcpStream::connect(s.addr()).await?)
        .await?;
    let r = HttpRequest::get("/api/v1/keys")
        .send_over(tls, &host)
        .await?;
    assert_eq!(r.status, 401, "{r:?}");
    // Plain HTTP on the TLS port is not answered as HTTP.
    let plain = HttpRequest::get("/api/v1/keys").send(s.addr()).await;
    assert!(plain.is_err(), "{plain:?}");
    s.stop().await?;
    Ok(())
}

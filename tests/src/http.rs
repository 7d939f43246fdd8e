//! A small HTTP/1.1 client for the tests, over a plain TCP stream: one request per
//! connection (`Connection: close`), the answer read whole, or read as Server-Sent Events
//! as they arrive. Written against the wire on purpose: the tests see exactly what curl and
//! a browser would get (status line, headers, chunked bodies).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::WAIT;

/// One answer.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Json> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("status {}, body not JSON: {:?}", self.status, self.body))
    }

    /// A header's value (the first, by lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request to send.
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a str>,
}

impl<'a> HttpRequest<'a> {
    pub fn get(path: &'a str) -> Self {
        HttpRequest {
            method: "GET",
            path,
            token: None,
            body: None,
        }
    }

    pub fn new(method: &'a str, path: &'a str) -> Self {
        HttpRequest {
            method,
            path,
            token: None,
            body: None,
        }
    }

    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    pub fn body(mut self, body: &'a str) -> Self {
        self.body = Some(body);
        self
    }

    fn head(&self, addr: impl std::fmt::Display) -> String {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
            self.method, self.path
        );
        if let Some(token) = self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = self.body {
            head.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head
    }

    /// Sends the request and reads the whole answer.
    pub async fn send(&self, addr: SocketAddr) -> Result<HttpResponse> {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
        self.send_over(stream, &addr.to_string()).await
    }

    /// Sends the request over an open connection (a TLS stream, say) to `host` and reads
    /// the whole answer.
    pub async fn send_over<S>(&self, mut stream: S, host: &str) -> Result<HttpResponse>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio::time::timeout(WAIT, async {
            stream.write_all(self.head(host).as_bytes()).await?;
            if let Some(body) = self.body {
                stream.write_all(body.as_bytes()).await?;
            }
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            parse(&raw)
        })
        .await
        .context("no HTTP answer within the wait")?
    }

    /// Sends the request and returns the event stream (fails unless the status is 200).
    pub async fn events(&self, addr: SocketAddr) -> Result<EventStream> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(self.head(addr).as_bytes()).await?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut status_line)).await??;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .context("no status")?
            .parse()?;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            tokio::time::timeout(WAIT, reader.read_line(&mut line)).await??;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if line.eq_ignore_ascii_case("transfer-encoding: chunked") {
                chunked = true;
            }
        }
        if status != 200 {
            bail!("events answered {status}");
        }
        Ok(EventStream {
            reader,
            chunked,
            text: String::new(),
        })
    }
}

/// Server-Sent Events as they arrive.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Received and not yet returned.
    text: String,
}

impl EventStream {
    /// The next event's `data` as JSON (comments and keep-alives skipped), waiting up to
    /// `wait`; `None` if none came in time.
    pub async fn next(&mut self, wait: std::time::Duration) -> Result<Option<Json>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    return Ok(Some(serde_json::from_str(&data.join("\n"))?));
                }
            }
            let more = tokio::time::timeout_at(deadline, self.read_more()).await;
            match more {
                Err(_) => return Ok(None),
                Ok(r) => r?,
            }
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        if self.chunked {
            let mut size = String::new();
            if self.reader.read_line(&mut size).await? == 0 {
                bail!("event stream ended");
            }
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                bail!("event stream ended");
            }
            let mut chunk = vec![0u8; size + 2];
            self.reader.read_exact(&mut chunk).await?;
            chunk.truncate(size);
            self.text.push_str(std::str::from_utf8(&chunk)?);
        } else {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("event stream ended");
            }
            self.text.push_str(&line);
        }
        Ok(())
    }
}

/// Status line, headers and body (de-chunked) of a whole answer.
fn parse(raw: &[u8]) -> Result<HttpResponse> {
    let text = std::str::from_utf8(raw)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            body.push_str(after.get(..size).context("short chunk")?);
            rest = after.get(size + 2..).context("short chunk")?;
        }
        body
    } else {
        rest.to_string()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

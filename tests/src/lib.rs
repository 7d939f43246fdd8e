//! Helpers shared by the end-to-end tests: a real server on 127.0.0.1:0 with a temp data
//! dir (in-process, or as a process that can be killed), and a websocket client that
//! speaks like the Ruby one (one request at a time, pushes set aside).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value as Json;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod format1;

/// How long a test waits for any one reply or push before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// The current time as float seconds since the Unix epoch, like the server's times.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// A JSON number as f64 (NaN when it is not one, so comparisons fail loudly).
pub fn num(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The folder of test-only fixture plugins (trap, ...).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plugins")
}

/// A test-only fixture plugin that tests copy into their own plugins directory.
pub fn extra_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/plugins-extra")
        .join(name)
}

/// Asks `{"types": {}}` until `done` holds for the answer (a hot reload is asynchronous);
/// fails after [`WAIT`], saying `what` was awaited and the last answer.
pub async fn wait_for_types(
    c: &mut Client,
    what: &str,
    done: impl Fn(&Json) -> bool,
) -> Result<Json> {
    let started = std::time::Instant::now();
    loop {
        let types = c.request(serde_json::json!({"types": {}})).await?;
        if done(&types) {
            return Ok(types);
        }
        if started.elapsed() > WAIT {
            bail!("waited {WAIT:?} for {what}; types answered {types}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Config for a server on port 0 with its data in `data` and plugins in `plugins`.
pub fn config(data: &Path, plugins: &Path) -> komoku::Config {
    komoku::Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data.to_path_buf(),
        plugins_dir: plugins.to_path_buf(),
        // Tests compact when they ask (`compact`), so figures never change under them.
        compaction_interval: 0,
        ..komoku::Config::default()
    }
}

/// An `[[auth.tokens]]` entry for `secret` granting `read`, `write`, `subscribe` and `define`
/// on the given key patterns.
pub fn token(
    name: &str,
    secret: &str,
    [read, write, subscribe, define]: [&[&str]; 4],
) -> komoku::auth::TokenConfig {
    let patterns = |p: &[&str]| p.iter().map(|s| s.to_string()).collect();
    komoku::auth::TokenConfig {
        name: name.into(),
        hash: komoku::auth::hash_token(secret),
        revoked: false,
        read: patterns(read),
        write: patterns(write),
        subscribe: patterns(subscribe),
        define: patterns(define),
    }
}

/// A real server in this process, on a fresh temp data dir, with the built-in types and the
/// fixture plugins.
pub struct TestServer {
    pub server: komoku::Server,
    pub data: TempDir,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusted its config.
    pub async fn start_with(tweak: impl FnOnce(&mut komoku::Config)) -> Result<TestServer> {
        let data = tempfile::tempdir()?;
        let mut config = config(data.path(), &fixtures_dir());
        tweak(&mut config);
        let server = komoku::Server::start(&config).await?;
        Ok(TestServer { server, data })
    }

    /// The v1 URL.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.server.local_addr)
    }

    /// The v2 URL.
    pub fn url_v2(&self) -> String {
        format!("ws://{}/v2", self.server.local_addr)
    }

    /// A v1 client.
    pub async fn client(&self) -> Result<Client> {
        Client::connect(&self.url()).await
    }

    /// A v2 client.
    pub async fn client_v2(&self) -> Result<Client> {
        Client::connect(&self.url_v2()).await
    }

    /// Shuts the server down in order and returns its data dir for a restart.
    pub async fn stop(self) -> Result<TempDir> {
        self.server.shutdown().await?;
        Ok(self.data)
    }
}

/// A websocket client holding one conversation at a time, like the Ruby client: the next
/// message that is not a `pub` is the reply; pushes are kept for [`Client::push`].
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pushes: VecDeque<Json>,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client> {
        Self::connect_request(url).await
    }

    /// Connects with a full upgrade request (to set headers such as `Authorization`).
    pub async fn connect_request(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<Client> {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .context("connect timed out")??;
        Ok(Client {
            ws,
            pushes: VecDeque::new(),
        })
    }

    /// Sends one text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends one binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    /// The next message, pushes included, as JSON.
    pub async fn next_message(&mut self) -> Result<Json> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("no message within the wait")?
                .context("connection closed")??;
            match msg {
                Message::Text(t) => return Ok(serde_json::from_str(t.as_str())?),
                Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Reads until the server's close frame and returns its code and reason; text frames
    /// before it are skipped. Fails if the connection ends without one (a reset, or EOF).
    pub async fn close_frame(&mut self) -> Result<(u16, String)> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("no close frame within the wait")?
                .context("connection ended without a close frame")?
                .context("connection failed before a close frame")?;
            if let Message::Close(frame) = msg {
                return Ok(frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
            }
        }
    }

    /// Sends `request` and returns the reply (the next message that is not a push).
    pub async fn request(&mut self, request: Json) -> Result<Json> {
        self.raw(&request.to_string()).await
    }

    /// Sends a text frame and returns the reply.
    pub async fn raw(&mut self, text: &str) -> Result<Json> {
        self.send_text(text).await?;
        self.reply().await
    }

    /// The next message that is not a push.
    pub async fn reply(&mut self) -> Result<Json> {
        loop {
            let msg = self.next_message().await?;
            if msg.get("pub").is_some() {
                self.pushes.push_back(msg);
            } else {
                return Ok(msg);
            }
        }
    }

    /// The next push (waiting up to [`WAIT`]).
    pub async fn push(&mut self) -> Result<Json> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        let msg = self.next_message().await?;
        if msg.get("pub").is_none() {
            bail!("expected a push, got {msg}");
        }
        Ok(msg)
    }

    /// A push if one arrives within `wait`, else `None`.
    pub async fn maybe_push(&mut self, wait: Duration) -> Result<Option<Json>> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        match tokio::time::timeout(wait, self.ws.next()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(Message::Text(t)))) => Ok(Some(serde_json::from_str(t.as_str())?)),
            Ok(other) => bail!("unexpected while waiting for a push: {other:?}"),
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await.ok();
        Ok(())
    }
}

/// The server as a separate process (the real command line), so a test can kill it.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `<bin> --listen 127.0.0.1:0 --data <data> --plugins <fixtures>` and waits for
    /// its "listening" line. `bin` is `env!("CARGO_BIN_EXE_komoku-e2e")` in a test.
    pub fn start(bin: &str, data: &Path) -> Result<ServerProcess> {
        Self::start_with_args(bin, data, &[])
    }

    /// [`ServerProcess::start`] with extra command-line flags.
    pub fn start_with_args(bin: &str, data: &Path, extra: &[&str]) -> Result<ServerProcess> {
        let mut command = Command::new(bin);
        command
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--plugins")
            .arg(fixtures_dir());
        Self::spawn(command)
    }

    /// Starts `<bin> --listen 127.0.0.1:0 <args>` in the working directory `cwd` (so relative
    /// `--data` and `--plugins` are relative to it) and waits for its "listening" line.
    pub fn start_in(bin: &str, cwd: &Path, args: &[&str]) -> Result<ServerProcess> {
        let mut command = Command::new(bin);
        command
            .current_dir(cwd)
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Result<ServerProcess> {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("komoku listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(ServerProcess { child, addr })
    }

    /// SIGTERM, as a service manager stops the server; waits up to `within` for the process
    /// to exit and returns its status (an error if it is still running then).
    pub fn terminate(mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > within {
                bail!("still running {within:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The server's process id (to read its memory in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`"HUP"`, `"TERM"`) with kill(1).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -s {name} failed");
        Ok(())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Helpers shared by the end-to-end tests: a real server on 127.0.0.1:0 with a temp data
//! dir (in-process, or as a process that can be killed), and a websocket client that
//! speaks like the Ruby one (one request at a time, pushes set aside).

pub mod http;

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

/// Starts the real binary with its data in `dir` and a config file (written there) that turns
/// auth on with one token, `secret`, that may read, subscribe to and define every key and
/// write the keys matching `write`.
pub fn start_with_one_token(
    bin: &str,
    dir: &Path,
    secret: &str,
    write: &str,
) -> Result<ServerProcess> {
    let config = dir.join("komoku.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n[[auth.tokens]]\nname = \"t\"\nhash = \"{}\"\nread = [\"*\"]\nwrite = [{write:?}]\nsubscribe = [\"*\"]\ndefine = [\"*\"]\n",
            komoku::auth::hash_token(secret)
        ),
    )?;
    let config = config.to_str().context("the config's path is not UTF-8")?;
    ServerProcess::start_with_args(bin, &dir.join("db"), &["--config", config])
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

    /// Where the server listens (websocket and HTTP).
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr
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

    /// Runs `command` (a `komoku` command line the caller built, with its own arguments and
    /// environment) and waits for its "listening" line.
    pub fn spawn(mut command: Command) -> Result<ServerProcess> {
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

/// A loopback port free right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A real Mosquitto broker (Debian's `mosquitto`), started on a free loopback port with its
/// own config file and persistence directory; stopped (SIGTERM) when dropped.
/// Waits until the server's first MQTT bridge says it is connected and subscribed (`stats`):
/// from then on no message to its topics is missed. Fails after [`WAIT`].
pub async fn mqtt_connected(c: &mut Client) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let stats = c.request(serde_json::json!({"stats": {}})).await?;
        if stats["mqtt"][0]["connected"] == true {
            return Ok(());
        }
        if started.elapsed() > WAIT {
            bail!("the bridge did not connect: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker with persistence on and no limit on the messages it queues for an
    /// offline client (Mosquitto's default keeps 1 000).
    pub async fn start() -> Result<Mosquitto> {
        Self::start_with("").await
    }

    /// [`Mosquitto::start`] with `extra` lines at the end of its config (another listener).
    pub async fn start_with(extra: &str) -> Result<Mosquitto> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nuser root\n\
             log_dest stderr\nlog_type error\nlog_type warning\n{extra}\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config)?;
        let mut broker = Mosquitto {
            child: None,
            port,
            dir,
        };
        broker.run().await?;
        Ok(broker)
    }

    /// Starts the process and waits until it accepts connections.
    async fn run(&mut self) -> Result<()> {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run mosquitto (apt-get install mosquitto mosquitto-clients)")?;
        self.child = Some(child);
        let started = std::time::Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if started.elapsed() > WAIT {
                bail!(
                    "mosquitto did not listen on port {} within {WAIT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the broker (SIGTERM: it saves its persistence file) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill -TERM mosquitto failed");
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the broker and starts it again on the same port with the same data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.run().await
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A client of this broker: the client handle and a task polling its connection, which
    /// counts the broker's acknowledgements of QoS 1 publishes and hands on what arrives.
    pub async fn client(&self, id: &str) -> Result<MqttClient> {
        self.client_with(id, true).await
    }

    /// [`Mosquitto::client`]; with `clean` false, under a persistent session (the broker
    /// keeps its subscriptions and queues messages while it is away).
    pub async fn client_with(&self, id: &str, clean: bool) -> Result<MqttClient> {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", self.port);
        options
            .set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10_000);
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let counter = acked.clone();
        let poller = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(_) => {}
                    // The broker may be restarting: try again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready)
            .await
            .context("mqtt client did not connect")??;
        Ok(MqttClient {
            client,
            acked,
            messages,
            poller,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// An MQTT client of a test (see [`Mosquitto::client`]).
pub struct MqttClient {
    pub client: rumqttc::AsyncClient,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Messages of the topics subscribed to.
    pub messages: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    poller: tokio::task::JoinHandle<()>,
}

impl MqttClient {
    /// Publishes with QoS 1 (not retained).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// Waits until the broker has acknowledged `n` QoS 1 publishes of this client.
    pub async fn wait_acked(&self, n: u64, within: Duration) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let acked = self.acked.load(std::sync::atomic::Ordering::Relaxed);
            if acked >= n {
                return Ok(());
            }
            if started.elapsed() > within {
                bail!("the broker acknowledged {acked} of {n} publishes within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

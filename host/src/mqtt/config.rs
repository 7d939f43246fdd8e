//! The `[[mqtt]]` sections of the config: one broker connection each, with its mappings.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::topic::{Filter, Template};

/// One broker connection (`[[mqtt]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS, default port
    /// 8883). Required.
    pub url: String,
    /// The MQTT version: 4 (3.1.1) or 5. Default = 4.
    #[serde(default = "default_protocol")]
    pub protocol: u8,
    /// The MQTT client id. The broker keeps this client's session (subscriptions and the
    /// QoS 1 messages not yet acknowledged) under it while Komoku is down, so it must be
    /// stable and unique on the broker. Default = `"komoku"`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Broker login. Default = none.
    pub username: Option<String>,
    /// Broker password (with `username`). Default = none.
    pub password: Option<String>,
    /// PEM file of the certificate authorities trusted for `mqtts://`. Default =
    /// `/etc/ssl/certs/ca-certificates.crt` (Debian's system store).
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for brokers that ask for one
    /// (`mqtts://` only). Default = none.
    pub client_cert: Option<PathBuf>,
    /// See `client_cert`.
    pub client_key: Option<PathBuf>,
    /// With `[auth]` enabled: the secret of the token whose grants the bridge has (it writes
    /// and defines only the keys that token may, and publishes only keys it may read).
    /// Required when auth is on; ignored when it is off (full access).
    pub token: Option<String>,
    /// Seconds between keep-alive pings. Default = 30.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: u64,
    /// Longest wait between reconnect attempts, in seconds (the wait starts at 1 s and
    /// doubles). Default = 30.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: u64,
    /// Topics taken into keys (`[[mqtt.ingest]]`).
    #[serde(default)]
    pub ingest: Vec<IngestConfig>,
    /// Keys published to topics (`[[mqtt.publish]]`).
    #[serde(default)]
    pub publish: Vec<PublishConfig>,
}

fn default_client_id() -> String {
    "komoku".into()
}

fn default_protocol() -> u8 {
    4
}

fn default_keep_alive() -> u64 {
    30
}

fn default_max_backoff() -> u64 {
    30
}

/// One `[[mqtt.ingest]]` mapping: a topic filter to a key template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// An MQTT topic filter, with `+` (one level) and `#` (the rest) wildcards. Required.
    pub topic: String,
    /// The key name: `{1}`, `{2}`, ... stand for the topic levels the wildcards matched, in
    /// order (`#` gives the rest of the topic with `/` turned into `.`), `{field}` for the
    /// JSON field name. Required.
    pub key: String,
    /// Fields picked from a JSON object payload, one key each (a dotted name reaches into
    /// nested objects: `"update.state"`). Default = none: the whole payload is one value (a
    /// number, `true`/`false`/`ON`/`OFF`, or else a string).
    #[serde(default)]
    pub fields: Vec<String>,
    /// A field of the JSON payload holding the time of the values: seconds since the epoch,
    /// or an RFC 3339 string. Default = none: the arrival time.
    pub time_field: Option<String>,
    /// The type of keys this mapping creates, defined on first sight with `opts`. Default =
    /// none: the type is guessed from the first value, as for a `put`.
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// The options of keys this mapping creates (with `type`). Default = none.
    #[serde(default)]
    pub opts: Map<String, Json>,
}

/// What a published message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The bare value: `21.5`, `true`, `on` as it is for a string.
    #[default]
    Value,
    /// `{"value": ..., "time": ..., "previous": ...}`.
    Json,
}

/// One `[[mqtt.publish]]` mapping: changes of keys to a topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// A key pattern (`*` matches any run of characters, as in `[auth]`). Required.
    pub keys: String,
    /// The topic: `{key}` stands for the key name, `{path}` for it with `.` turned into `/`.
    /// Default = `"komoku/{path}"`.
    #[serde(default = "default_publish_topic")]
    pub topic: String,
    /// `"value"` (default) or `"json"`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Publish with the retain flag, so a new subscriber gets the latest value at once.
    /// Default = true.
    #[serde(default = "default_true")]
    pub retain: bool,
    /// Also publish a Home Assistant MQTT discovery config (retained) for each key, under
    /// `<discovery_prefix>/sensor/komoku/<key>/config`. Default = false.
    #[serde(default)]
    pub ha_discovery: bool,
    /// Home Assistant's discovery prefix. Default = `"homeassistant"`.
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
}

fn default_publish_topic() -> String {
    "komoku/{path}".into()
}

fn default_true() -> bool {
    true
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

/// Where a broker is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    /// Parses the broker URL.
    pub fn broker(&self) -> anyhow::Result<BrokerAddr> {
        let (tls, rest) = if let Some(rest) = self.url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = self.url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            anyhow::bail!(
                "mqtt url {:?}: must start with mqtt:// or mqtts://",
                self.url
            );
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            anyhow::bail!(
                "mqtt url {:?}: expected mqtt[s]://host[:port] (credentials go in username \
                 and password)",
                self.url
            );
        }
        let default_port = if tls { 8883 } else { 1883 };
        // `[::1]:1883`, `host:1883`, `host`.
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("mqtt url {:?}: bad port {port:?}", self.url))?,
            ),
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(BrokerAddr {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// Refuses a section that cannot work, with the reason (checked at start).
    pub fn check(&self) -> anyhow::Result<()> {
        let broker = self.broker()?;
        if !matches!(self.protocol, 4 | 5) {
            anyhow::bail!(
                "mqtt {}: protocol is 4 (MQTT 3.1.1) or 5, not {}",
                self.url,
                self.protocol
            );
        }
        if self.client_id.is_empty() {
            anyhow::bail!("mqtt {}: client_id cannot be empty", self.url);
        }
        if self.password.is_some() && self.username.is_none() {
            anyhow::bail!("mqtt {}: a password needs a username", self.url);
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            anyhow::bail!("mqtt {}: client_cert and client_key go together", self.url);
        }
        if !broker.tls && (self.client_cert.is_some() || self.ca_file.is_some()) {
            anyhow::bail!(
                "mqtt {}: ca_file and client_cert need an mqtts:// url",
                self.url
            );
        }
        for m in &self.ingest {
            m.compile()
                .map_err(|e| anyhow::anyhow!("mqtt {} ingest {:?}: {e}", self.url, m.topic))?;
        }
        for p in &self.publish {
            Template::publish(&p.topic).map_err(|e| {
                anyhow::anyhow!("mqtt {} publish {:?}: topic: {e}", self.url, p.keys)
            })?;
            if p.topic.contains(['+', '#']) {
                anyhow::bail!(
                    "mqtt {} publish {:?}: a topic to publish to has no wildcards",
                    self.url,
                    p.keys
                );
            }
        }
        Ok(())
    }
}

impl IngestConfig {
    /// The topic filter and key template, checked against each other.
    pub fn compile(&self) -> anyhow::Result<(Filter, Template)> {
        let filter = Filter::parse(&self.topic)?;
        let template = Template::ingest(&self.key, filter.wildcards(), !self.fields.is_empty())?;
        if self.fields.len() > 1 && !template.has_field() {
            anyhow::bail!("several fields need {{field}} in the key, or they would share one key");
        }
        if self.time_field.is_some() && self.fields.is_empty() {
            anyhow::bail!("time_field needs JSON payloads: name the value fields in `fields`");
        }
        if !self.opts.is_empty() && self.type_name.is_none() {
            anyhow::bail!("opts need a type");
        }
        Ok((filter, template))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> MqttConfig {
        toml::from_str(&format!("url = {url:?}")).expect("a url alone is a section")
    }

    #[test]
    fn broker_urls_parse_with_default_ports() -> anyhow::Result<()> {
        let b = section("mqtt://localhost").broker()?;
        assert_eq!((b.host.as_str(), b.port, b.tls), ("localhost", 1883, false));
        let b = section("mqtts://broker.lan:9000/").broker()?;
        assert_eq!((b.host.as_str(), b.port, b.tls), ("broker.lan", 9000, true));
        let b = section("mqtt://[::1]:1884").broker()?;
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        let b = section("mqtts://[::1]").broker()?;
        assert_eq!((b.host.as_str(), b.port), ("::1", 8883));
        for bad in [
            "tcp://x",
            "mqtt://",
            "mqtt://x:port",
            "mqtt://u:p@x",
            "mqtt://x/topic",
        ] {
            assert!(section(bad).broker().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn mappings_that_cannot_work_are_refused() -> anyhow::Result<()> {
        let config: MqttConfig = toml::from_str(
            r#"
            url = "mqtt://localhost"
            [[ingest]]
            topic = "zigbee2mqtt/+"
            key = "zigbee.{1}.{field}"
            fields = ["temperature", "humidity"]
            "#,
        )?;
        config.check()?;
        for (topic, key, fields) in [
            ("zigbee2mqtt/+", "zigbee.{2}.{field}", "[\"t\"]"), // one wildcard only
            ("zigbee2mqtt/+", "zigbee.{1}", "[\"a\", \"b\"]"),  // two fields, one key
            ("zigbee2mqtt/+", "zigbee.{1}.{field}", "[]"),      // {field} without fields
            ("a/#/b", "x", "[]"),                               // # not last
            ("a/b+", "x", "[]"),                                // + not a whole level
        ] {
            let text = format!(
                "url = \"mqtt://x\"\n[[ingest]]\ntopic = {topic:?}\nkey = {key:?}\nfields = {fields}"
            );
            let config: MqttConfig = toml::from_str(&text)?;
            assert!(config.check().is_err(), "{topic} {key} {fields}");
        }
        Ok(())
    }
}

//! One broker connection in MQTT 3.1.1 or 5 (rumqttc has a client for each): the few
//! operations the bridge needs, the same for both.

use std::time::Duration;

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{QoS, Transport};

use super::config::MqttConfig;

/// Requests (acks, publishes, subscribes) queued for the connection.
const REQUEST_QUEUE: usize = 10_000;

/// A message the bridge received, to acknowledge once taken.
pub struct Message {
    pub topic: String,
    pub retain: bool,
    packet: Packet,
}

enum Packet {
    V4(rumqttc::Publish),
    V5(p5::Publish),
}

impl Message {
    pub fn payload(&self) -> &[u8] {
        match &self.packet {
            Packet::V4(p) => &p.payload,
            Packet::V5(p) => &p.payload,
        }
    }
}

/// What one poll of the connection brought.
pub enum Polled {
    /// Connected (again); whether the broker still had the session.
    Connected {
        session_present: bool,
    },
    Message(Box<Message>),
    /// The broker confirmed a subscription.
    Subscribed,
    /// The connection failed (the next poll reconnects).
    Failed(String),
    Other,
}

/// The request side of a connection.
#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The connection: polled by one task.
pub enum Connection {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A client for `config`: a persistent session (clean session off; in MQTT 5 a session
/// that never expires) and manual acknowledgements.
pub fn connect(
    config: &MqttConfig,
    tls: Option<Transport>,
) -> anyhow::Result<(Client, Connection)> {
    let broker = config.broker()?;
    let keep_alive = Duration::from_secs(config.keep_alive.max(5));
    if config.protocol == 5 {
        let mut options = v5::MqttOptions::new(&config.client_id, &broker.host, broker.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(u32::MAX))
            .set_manual_acks(true)
            .set_keep_alive(keep_alive)
            .set_max_packet_size(Some(1 << 20));
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        if let Some(tls) = tls {
            options.set_transport(tls);
        }
        let (client, eventloop) = v5::AsyncClient::new(options, REQUEST_QUEUE);
        Ok((Client::V5(client), Connection::V5(Box::new(eventloop))))
    } else {
        let mut options = rumqttc::MqttOptions::new(&config.client_id, &broker.host, broker.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(keep_alive)
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &config.username {
            options.set_credentials(user, config.password.clone().unwrap_or_default());
        }
        if let Some(tls) = tls {
            options.set_transport(tls);
        }
        let (client, eventloop) = rumqttc::AsyncClient::new(options, REQUEST_QUEUE);
        Ok((Client::V4(client), Connection::V4(Box::new(eventloop))))
    }
}

impl Connection {
    pub async fn poll(&mut self) -> Polled {
        match self {
            Connection::V4(eventloop) => match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => Polled::Connected {
                    session_present: ack.session_present,
                },
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    Polled::Message(Box::new(Message {
                        topic: p.topic.clone(),
                        retain: p.retain,
                        packet: Packet::V4(p),
                    }))
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => Polled::Subscribed,
                Ok(_) => Polled::Other,
                Err(e) => Polled::Failed(e.to_string()),
            },
            Connection::V5(eventloop) => match eventloop.poll().await {
                Ok(v5::Event::Incoming(p5::Packet::ConnAck(ack))) => Polled::Connected {
                    session_present: ack.session_present,
                },
                Ok(v5::Event::Incoming(p5::Packet::Publish(p))) => {
                    Polled::Message(Box::new(Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        retain: p.retain,
                        packet: Packet::V5(p),
                    }))
                }
                Ok(v5::Event::Incoming(p5::Packet::SubAck(_))) => Polled::Subscribed,
                Ok(_) => Polled::Other,
                Err(e) => Polled::Failed(e.to_string()),
            },
        }
    }
}

impl Client {
    /// Acknowledges a QoS 1 message (PUBACK).
    pub async fn ack(&self, message: &Message) -> anyhow::Result<()> {
        match (self, &message.packet) {
            (Client::V4(c), Packet::V4(p)) => c.ack(p).await?,
            (Client::V5(c), Packet::V5(p)) => c.ack(p).await?,
            _ => anyhow::bail!("a message acknowledged on another connection"),
        }
        Ok(())
    }

    /// Subscribes to `filters` with QoS 1 (in MQTT 5, retained messages are sent only for a
    /// subscription the session did not have).
    pub fn subscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => c.try_subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
            )?,
            Client::V5(c) => c.try_subscribe_many(filters.iter().map(|f| {
                let mut filter = p5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce);
                filter.retain_forward_rule = p5::RetainForwardRule::OnNewSubscribe;
                filter
            }))?,
        }
        Ok(())
    }

    /// Publishes with QoS 1.
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
    ) -> anyhow::Result<()> {
        match self {
            Client::V4(c) => c.publish(topic, QoS::AtLeastOnce, retain, payload).await?,
            Client::V5(c) => {
                c.publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                    .await?
            }
        }
        Ok(())
    }

    /// Asks for a clean disconnect (the session stays on the broker).
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|_| ()),
            Client::V5(c) => c.try_disconnect().map_err(|_| ()),
        };
    }
}

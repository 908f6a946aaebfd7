//! The routed message: the only type that crosses layers and shards.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

/// A message as the router sees it. Every field is a `Bytes` slice, usually of the
/// publisher's read buffer, so routing and cross-shard hand-off never copy the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Literal subject in NATS spelling (`a.b.c`).
    pub subject: Bytes,
    /// Reply subject; empty when the publisher asked for none.
    pub reply: Bytes,
    /// Raw NATS header block (`NATS/1.0\r\n...\r\n\r\n`); empty when there are no headers.
    /// MQTT publishes always carry one (`Nmqtt-Pub`), so NATS subscribers see their QoS.
    pub headers: Bytes,
    /// Payload bytes.
    pub payload: Bytes,
    /// What MQTT subscribers need beyond the NATS fields; default for NATS publishes.
    pub meta: Meta,
}

/// MQTT facts of a message. A NATS publish leaves it at its default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// True when an MQTT client (or a will) published it: then `qos`, `retain`, `topic` and
    /// `properties` are the publisher's, and MQTT subscribers ignore `headers` and `reply`.
    pub from_mqtt: bool,
    /// QoS of the publish (0 for NATS publishes).
    pub qos: u8,
    /// RETAIN flag of the publish.
    pub retain: bool,
    /// The MQTT topic as published, so MQTT deliveries need no translation back.
    pub topic: Bytes,
    /// 5.0 properties, shared by every delivery; `None` when there are none (no allocation).
    pub properties: Option<Arc<MqttProperties>>,
}

/// The 5.0 PUBLISH properties a broker passes on (topic alias and subscription identifiers
/// are per connection and per subscription, so they are not here).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MqttProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// When the message expires (receipt + Message Expiry Interval).
    pub expires_at: Option<Instant>,
    /// Content Type.
    pub content_type: Option<Bytes>,
    /// Response Topic, in MQTT spelling.
    pub response_topic: Option<Bytes>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<(Bytes, Bytes)>,
}

/// A [`Message`] borrowed: from a `Message`, or straight from a publisher's read buffer when
/// the message is delivered without being cut from it (`shard::nats::publish_in_place`,
/// `shard::mqtt::publish_in_place`). Deliveries (NATS MSG, MQTT QoS 0 PUBLISH) need nothing
/// else, so they take no reference count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgParts<'a> {
    /// Literal subject in NATS spelling.
    pub subject: &'a [u8],
    /// Reply subject; empty for none.
    pub reply: &'a [u8],
    /// Raw NATS header block; empty for none.
    pub headers: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
    /// The MQTT facts ([`Meta`]), borrowed.
    pub meta: MetaParts<'a>,
}

/// [`Meta`] borrowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaParts<'a> {
    /// An MQTT client (or a will) published it.
    pub from_mqtt: bool,
    /// QoS of the publish.
    pub qos: u8,
    /// RETAIN flag of the publish.
    pub retain: bool,
    /// The MQTT topic as published (empty for NATS publishes).
    pub topic: &'a [u8],
    /// 5.0 properties, if any.
    pub properties: Option<&'a MqttProperties>,
    /// The NATS header block as `Bytes` when the parts come from a [`Message`] that has one, so an MQTT 5
    /// delivery can pass its headers on as user properties that are slices of it rather than
    /// copies. The in-place paths leave it `None`: they carry no NATS headers of their own.
    pub headers: Option<&'a Bytes>,
}

impl MsgParts<'_> {
    /// Bytes these parts count for in `in_bytes`/`out_bytes` (headers plus payload).
    pub fn size(&self) -> usize {
        self.headers.len() + self.payload.len()
    }
}

impl Message {
    /// Bytes this message counts for in `in_bytes`/`out_bytes` (headers plus payload).
    pub fn size(&self) -> usize {
        self.headers.len() + self.payload.len()
    }

    /// The message, borrowed.
    pub fn parts(&self) -> MsgParts<'_> {
        MsgParts {
            subject: &self.subject,
            reply: &self.reply,
            headers: &self.headers,
            payload: &self.payload,
            meta: MetaParts {
                from_mqtt: self.meta.from_mqtt,
                qos: self.meta.qos,
                retain: self.meta.retain,
                topic: &self.meta.topic,
                properties: self.meta.properties.as_deref(),
                headers: (!self.headers.is_empty()).then_some(&self.headers),
            },
        }
    }

    /// True if the message carries a Message Expiry that has passed; reads the clock only for
    /// messages that can expire.
    pub fn expired_now(&self) -> bool {
        self.meta
            .properties
            .as_ref()
            .and_then(|p| p.expires_at)
            .is_some_and(|at| at <= Instant::now())
    }
}

impl Message {
    /// A copy that shares no buffer with the publisher's read buffer. Stored messages (retained,
    /// queued for an offline session) use it so that a few bytes kept do not pin a whole read
    /// buffer.
    pub fn detached(&self) -> Message {
        fn copy(b: &Bytes) -> Bytes {
            if b.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(b)
            }
        }
        let properties = self.meta.properties.as_ref().map(|p| {
            Arc::new(MqttProperties {
                payload_format_indicator: p.payload_format_indicator,
                expires_at: p.expires_at,
                content_type: p.content_type.as_ref().map(copy),
                response_topic: p.response_topic.as_ref().map(copy),
                correlation_data: p.correlation_data.as_ref().map(copy),
                user_properties: p
                    .user_properties
                    .iter()
                    .map(|(k, v)| (copy(k), copy(v)))
                    .collect(),
            })
        });
        Message {
            subject: copy(&self.subject),
            reply: copy(&self.reply),
            headers: copy(&self.headers),
            payload: copy(&self.payload),
            meta: Meta {
                from_mqtt: self.meta.from_mqtt,
                qos: self.meta.qos,
                retain: self.meta.retain,
                topic: copy(&self.meta.topic),
                properties,
            },
        }
    }
}

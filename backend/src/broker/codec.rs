//! MQTT 3.1, 3.1.1 and 5 packets: the subset a broker for units needs, read from and written to bytes.
//!
//! Decoding is strict where a lax reading could let a client past authorization (topic strings must be
//! valid UTF-8 without NUL, lengths must add up, reserved flags must be as the spec says) and tolerant of
//! what does not matter to us (MQTT 5 properties are skipped).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol revision a client speaks; replies follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.1 (level 3) and 3.1.1 (level 4) share their packet layouts.
    V3,
    V5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub will: Option<Will>,
    /// MQTT 5: most QoS 1 deliveries the client takes unacknowledged (its Receive Maximum).
    pub receive_maximum: Option<u16>,
    /// MQTT 5: how long the session outlives the connection, in seconds (0: it ends with it).
    pub session_expiry: u32,
}

/// The message a client asks the broker to publish for it when its connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 Will Delay Interval, in seconds.
    pub delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub packet_id: Option<u16>,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        packet_id: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        packet_id: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `with_will`: an MQTT 5 DISCONNECT with reason 0x04 (Disconnect with Will Message).
    Disconnect {
        with_will: bool,
    },
}

/// A packet that cannot be accepted; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("connection closed")]
    Closed,
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("unsupported packet type {0}")]
    Unsupported(u8),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("not UTF-8"))?;
        if text.contains('\0') {
            return Err(DecodeError::Malformed("NUL in a string"));
        }
        Ok(text.to_owned())
    }

    fn varint(&mut self) -> Result<usize, DecodeError> {
        let mut value = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("variable length over four bytes"))
    }

    fn skip_properties(&mut self) -> Result<(), DecodeError> {
        let len = self.varint()?;
        self.take(len).map(|_| ())
    }
}

/// Reads one packet's fixed header and body; `max` bounds the body so a client cannot make us allocate.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<(u8, Vec<u8>), DecodeError> {
    let first = match reader.read_u8().await {
        Ok(byte) => byte,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(DecodeError::Closed),
        Err(e) => return Err(e.into()),
    };
    let mut len = 0usize;
    let mut done = false;
    for shift in [0, 7, 14, 21] {
        let byte = reader.read_u8().await?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            done = true;
            break;
        }
    }
    if !done {
        return Err(DecodeError::Malformed("variable length over four bytes"));
    }
    if len > max {
        return Err(DecodeError::TooLarge(len));
    }
    // The buffer grows with the bytes that actually arrive: a length announced but never sent costs nothing.
    let mut body = Vec::with_capacity(len.min(4096));
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if read < len {
        return Err(DecodeError::Closed);
    }
    Ok((first, body))
}

/// Decodes a packet from its first byte and body. `version` is the connection's, once CONNECT set it.
pub fn decode(first: u8, body: &[u8], version: Version) -> Result<Packet, DecodeError> {
    let flags = first & 0x0f;
    // MQTT 3.1.1 §2.2.2-2 / 5.0 §2.1.3: only PUBLISH carries flags of its own; every other packet has
    // fixed ones, and anything else is malformed (as Mosquitto treats it).
    let fixed_flags = match first >> 4 {
        3 => flags,
        6 | 8 | 10 => 0x02,
        _ => 0,
    };
    if flags != fixed_flags {
        return Err(DecodeError::Malformed("reserved flags"));
    }
    let mut r = Reader { bytes: body };
    let packet = match first >> 4 {
        1 => Packet::Connect(decode_connect(&mut r)?),
        3 => {
            let qos = (flags >> 1) & 0x03;
            if qos == 3 {
                return Err(DecodeError::Malformed("QoS 3"));
            }
            let topic = r.string()?;
            let packet_id = if qos > 0 {
                Some(nonzero_packet_id(&mut r)?)
            } else {
                None
            };
            if version == Version::V5 {
                r.skip_properties()?;
            }
            Packet::Publish(Publish {
                dup: flags & 0x08 != 0,
                qos,
                retain: flags & 0x01 != 0,
                topic,
                packet_id,
                payload: r.bytes.to_vec(),
            })
        }
        4 => Packet::PubAck(r.u16()?),
        5 => Packet::PubRec(r.u16()?),
        6 => Packet::PubRel(r.u16()?),
        7 => Packet::PubComp(r.u16()?),
        8 | 10 => {
            let packet_id = nonzero_packet_id(&mut r)?;
            if version == Version::V5 {
                r.skip_properties()?;
            }
            let subscribe = first >> 4 == 8;
            let mut filters = Vec::new();
            let mut names = Vec::new();
            while !r.bytes.is_empty() {
                let filter = r.string()?;
                if subscribe {
                    let options = r.u8()?;
                    if options & 0x03 == 3 {
                        return Err(DecodeError::Malformed("QoS 3"));
                    }
                    filters.push((filter, options & 0x03));
                } else {
                    names.push(filter);
                }
            }
            if filters.is_empty() && names.is_empty() {
                return Err(DecodeError::Malformed("no topic filters"));
            }
            if subscribe {
                Packet::Subscribe { packet_id, filters }
            } else {
                Packet::Unsubscribe {
                    packet_id,
                    filters: names,
                }
            }
        }
        12 => Packet::PingReq,
        14 => Packet::Disconnect {
            with_will: version == Version::V5 && body.first() == Some(&0x04),
        },
        other => return Err(DecodeError::Unsupported(other)),
    };
    Ok(packet)
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let version = match (name, level) {
        (b"MQTT", 4) | (b"MQIsdp", 3) => Version::V3,
        (b"MQTT", 5) => Version::V5,
        _ => return Err(DecodeError::Malformed("unsupported protocol level")),
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("reserved connect flag"));
    }
    let keep_alive = r.u16()?;
    let props = if version == Version::V5 {
        connect_properties(r)?
    } else {
        ConnectProperties::default()
    };
    let client_id = r.string()?;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let will = if flags & 0x04 != 0 {
        if will_qos == 3 {
            return Err(DecodeError::Malformed("will QoS 3"));
        }
        let delay = if version == Version::V5 {
            will_delay(r)?
        } else {
            0
        };
        Some(Will {
            topic: r.string()?,
            payload: r.binary()?.to_vec(),
            qos: will_qos,
            retain: will_retain,
            delay,
        })
    } else if will_qos != 0 || will_retain {
        // MQTT 3.1.1 §3.1.2-11/-13/-15: without a will, its QoS and retain flags must be 0.
        return Err(DecodeError::Malformed("will flags without a will"));
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    if flags & 0x40 != 0 {
        r.binary()?;
    }
    Ok(Connect {
        version,
        clean_session: flags & 0x02 != 0,
        keep_alive,
        client_id,
        username,
        will,
        receive_maximum: props.receive_maximum,
        session_expiry: props.session_expiry,
    })
}

/// A packet id where one is required: MQTT forbids 0 (3.1.1 §2.3.1, 5.0 §2.2.1).
fn nonzero_packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("packet id 0")),
        id => Ok(id),
    }
}

/// The CONNECT properties the broker acts on.
#[derive(Default)]
struct ConnectProperties {
    receive_maximum: Option<u16>,
    session_expiry: u32,
}

/// Reads CONNECT properties, keeping Receive Maximum (0 is a protocol error, MQTT 5 §3.1.2.11.3) and
/// Session Expiry Interval.
fn connect_properties(r: &mut Reader<'_>) -> Result<ConnectProperties, DecodeError> {
    let len = r.varint()?;
    let mut props = Reader {
        bytes: r.take(len)?,
    };
    let mut out = ConnectProperties::default();
    while !props.bytes.is_empty() {
        match props.varint()? {
            0x11 => {
                let b = props.take(4)?;
                out.session_expiry = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            }
            0x27 => {
                props.take(4)?;
            }
            0x21 => match props.u16()? {
                0 => return Err(DecodeError::Protocol("receive maximum 0")),
                n => out.receive_maximum = Some(n),
            },
            0x22 => {
                props.u16()?;
            }
            0x17 | 0x19 => {
                props.u8()?;
            }
            0x26 => {
                props.string()?;
                props.string()?;
            }
            0x15 => {
                props.string()?;
            }
            0x16 => {
                props.binary()?;
            }
            _ => return Err(DecodeError::Malformed("unknown CONNECT property")),
        }
    }
    Ok(out)
}

/// Reads the will properties (MQTT 5 §3.1.3.2), keeping the Will Delay Interval.
fn will_delay(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    let len = r.varint()?;
    let mut props = Reader {
        bytes: r.take(len)?,
    };
    let mut delay = 0;
    while !props.bytes.is_empty() {
        match props.varint()? {
            0x18 => {
                let b = props.take(4)?;
                delay = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            }
            0x02 => {
                props.take(4)?;
            }
            0x01 => {
                props.u8()?;
            }
            0x03 | 0x08 => {
                props.string()?;
            }
            0x09 => {
                props.binary()?;
            }
            0x26 => {
                props.string()?;
                props.string()?;
            }
            _ => return Err(DecodeError::Malformed("unknown will property")),
        }
    }
    Ok(delay)
}

fn push_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    push_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadCredentials,
    NotAuthorized,
    BadClientId,
}

/// A CONNACK refusing the connection.
pub fn connack_refused(version: Version, refusal: Refusal) -> Vec<u8> {
    let code = match (version, refusal) {
        (Version::V3, Refusal::BadCredentials) => 4,
        (Version::V3, Refusal::NotAuthorized) => 5,
        (Version::V3, Refusal::BadClientId) => 2,
        (Version::V5, Refusal::BadCredentials) => 0x86,
        (Version::V5, Refusal::NotAuthorized) => 0x87,
        (Version::V5, Refusal::BadClientId) => 0x85,
    };
    match version {
        Version::V3 => frame(0x20, &[0, code]),
        Version::V5 => frame(0x20, &[0, code, 0]),
    }
}

/// A CONNACK accepting the connection. `session_present`: a stored session was resumed. `session_expiry`:
/// for MQTT 5, the Session Expiry Interval the broker uses when it is not the one the client asked for.
pub fn connack(version: Version, session_present: bool, session_expiry: Option<u32>) -> Vec<u8> {
    let flags = u8::from(session_present);
    match version {
        Version::V3 => frame(0x20, &[flags, 0]),
        Version::V5 => {
            // What this broker does not offer, so MQTT 5 clients need not find out by being disconnected:
            // Maximum QoS 1, no wildcard, subscription-identifier or shared subscriptions, the largest
            // packet it reads. Topic Alias Maximum is absent, which means 0 (no aliases).
            let max_packet = u32::try_from(super::MAX_PACKET).unwrap_or(u32::MAX);
            let mut props = vec![0x24, 1, 0x28, 0, 0x29, 0, 0x2a, 0, 0x27];
            props.extend_from_slice(&max_packet.to_be_bytes());
            if let Some(expiry) = session_expiry {
                props.push(0x11);
                props.extend_from_slice(&expiry.to_be_bytes());
            }
            let mut body = vec![flags, 0];
            push_varint(&mut body, props.len());
            body.extend_from_slice(&props);
            frame(0x20, &body)
        }
    }
}

/// MQTT 5 reason codes the broker closes a connection with (DISCONNECT, §3.14.2.1).
pub mod reason {
    /// Closed without a DISCONNECT from the broker (the client left, or MQTT 3).
    pub const NONE: u8 = 0;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8b;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8d;
    pub const SESSION_TAKEN_OVER: u8 = 0x8e;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9b;
}

/// An MQTT 5 DISCONNECT with `reason`.
pub fn disconnect(reason: u8) -> Vec<u8> {
    frame(0xe0, &[reason, 0])
}

pub fn publish(version: Version, topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    publish_with_id(version, topic, payload, retain, None, false)
}

/// A PUBLISH at QoS 1 when `packet_id` is given, else QoS 0; `dup` marks a redelivery.
pub fn publish_with_id(
    version: Version,
    topic: &str,
    payload: &[u8],
    retain: bool,
    packet_id: Option<u16>,
    dup: bool,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 5);
    push_string(&mut body, topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if version == Version::V5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    let mut first = if retain { 0x31 } else { 0x30 };
    if packet_id.is_some() {
        first |= 0x02;
        if dup {
            first |= 0x08;
        }
    }
    frame(first, &body)
}

pub fn ack(kind: u8, packet_id: u16) -> Vec<u8> {
    let first = match kind {
        6 => 0x62,
        other => other << 4,
    };
    frame(first, &packet_id.to_be_bytes())
}

/// SUBACK: one code per filter, a granted QoS or a refusal.
pub fn suback(version: Version, packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
    }
    body.extend_from_slice(codes);
    frame(0x90, &body)
}

pub fn unsuback(version: Version, packet_id: u16, count: usize) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 {
        body.push(0);
        body.extend(std::iter::repeat_n(0, count));
    }
    frame(0xb0, &body)
}

pub fn pingresp() -> Vec<u8> {
    vec![0xd0, 0]
}

/// The refusal code for one SUBSCRIBE filter.
pub fn suback_refused(version: Version) -> u8 {
    match version {
        Version::V3 => 0x80,
        Version::V5 => 0x87,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    async fn roundtrip(bytes: &[u8], version: Version) -> Result<Packet, DecodeError> {
        let mut reader = bytes;
        let (first, body) = read_frame(&mut reader, 1 << 20).await?;
        decode(first, &body, version)
    }

    #[tokio::test]
    async fn a_published_message_decodes_as_written() {
        for version in [Version::V3, Version::V5] {
            let bytes = publish(version, "d/1/pepeunit", b"21.5", true);
            let Packet::Publish(p) = roundtrip(&bytes, version).await.unwrap() else {
                panic!("not a publish");
            };
            assert_eq!(
                (p.topic.as_str(), p.payload.as_slice(), p.retain, p.qos),
                ("d/1/pepeunit", &b"21.5"[..], true, 0)
            );
        }
    }

    #[tokio::test]
    async fn connect_v311_and_v5() {
        // CONNECT v3.1.1, clean, keepalive 60, client "c1", username "u", password "p".
        let mut v3 = vec![
            0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60, 0, 2, b'c', b'1', 0, 1, b'u', 0,
            1, b'p',
        ];
        v3[1] = (v3.len() - 2) as u8;
        let Packet::Connect(c) = roundtrip(&v3, Version::V3).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                c.version,
                c.client_id.as_str(),
                c.username.as_deref(),
                c.keep_alive
            ),
            (Version::V3, "c1", Some("u"), 60)
        );
        // The same in MQTT 5 with a session-expiry property.
        let v5 = [
            0x10, 25, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xc2, 0, 60, 5, 0x11, 0, 0, 0, 10, 0, 2,
            b'c', b'1', 0, 1, b'u', 0, 1, b'p',
        ];
        let mut fixed = v5.to_vec();
        fixed[1] = (fixed.len() - 2) as u8;
        let Packet::Connect(c) = roundtrip(&fixed, Version::V3).await.unwrap() else {
            panic!()
        };
        assert_eq!((c.version, c.username.as_deref()), (Version::V5, Some("u")));
    }

    #[tokio::test]
    async fn wills_session_expiry_and_disconnect_reasons_are_read() {
        // MQTT 5 CONNECT: clean start off, will QoS 1 with a 7 s delay, session expiry 300 s.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x80 | 0x04 | 0x08, 0, 60];
        body.extend_from_slice(&[5, 0x11, 0, 0, 1, 44]);
        body.extend_from_slice(&[0, 2, b'c', b'1']);
        body.extend_from_slice(&[5, 0x18, 0, 0, 0, 7]);
        body.extend_from_slice(&[0, 1, b'w', 0, 3, b'b', b'y', b'e']);
        body.extend_from_slice(&[0, 1, b'u']);
        let bytes = frame(0x10, &body);
        let Packet::Connect(c) = roundtrip(&bytes, Version::V3).await.unwrap() else {
            panic!()
        };
        assert_eq!((c.clean_session, c.session_expiry), (false, 300));
        assert_eq!(
            c.will,
            Some(Will {
                topic: "w".into(),
                payload: b"bye".to_vec(),
                qos: 1,
                retain: false,
                delay: 7
            })
        );
        // Will flags without a will are malformed (MQTT 3.1.1 §3.1.2-11).
        let v3 = frame(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 0x08, 0, 60, 0, 1, b'c'],
        );
        assert!(roundtrip(&v3, Version::V3).await.is_err());
        assert_eq!(
            roundtrip(&[0xe0, 1, 0x04], Version::V5).await.unwrap(),
            Packet::Disconnect { with_will: true }
        );
        assert_eq!(
            roundtrip(&[0xe0, 0], Version::V5).await.unwrap(),
            Packet::Disconnect { with_will: false }
        );
        // CONNACK carries session present, and MQTT 5 the interval used.
        assert_eq!(connack(Version::V3, true, None), [0x20, 2, 1, 0]);
        let v5 = connack(Version::V5, false, Some(60));
        assert!(v5.ends_with(&[0x11, 0, 0, 0, 60]), "{v5:?}");
        // A redelivery has DUP set.
        assert_eq!(
            publish_with_id(Version::V3, "t", b"", false, Some(1), true)[0],
            0x3a
        );
    }

    #[tokio::test]
    async fn malformed_packets_are_refused() {
        // The last four are accepted by rumqttc 0.25.1's `mqttbytes::v4` reader, which is why the broker
        // keeps this codec (docs/src/broker.md, "The codec").
        let cases: [&[u8]; 12] = [
            &[0x82, 3, 0, 1, 0],             // SUBSCRIBE with a truncated filter
            &[0x80, 5, 0, 1, 0, 1, b'a'], // SUBSCRIBE with wrong reserved flags (then truncated options)
            &[0x36, 4, 0, 1, b'a', 0],    // PUBLISH with QoS 3
            &[0x30, 4, 0, 2, 0xff, 0xfe], // topic not UTF-8
            &[0xf0, 0],                   // AUTH: unsupported
            &[0x32, 5, 0, 1, b'a', 0, 0], // PUBLISH QoS 1 with packet id 0
            &[0x82, 6, 0, 0, 0, 1, b'a', 1], // SUBSCRIBE with packet id 0
            &[0x82, 6, 0, 1, 0, 1, b'a', 3], // SUBSCRIBE asking QoS 3
            &[0x82, 6, 0, 0, 0, 1, b'a', 1], // SUBSCRIBE with packet id 0
            &[
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'c',
            ], // reserved CONNECT flag
            &[0xc1, 0],                   // PINGREQ with flags
            &[0xe2, 0],                   // DISCONNECT with flags
        ];
        for bytes in cases {
            assert!(roundtrip(bytes, Version::V3).await.is_err(), "{bytes:?}");
        }
        let huge = [0x30, 0xff, 0xff, 0xff, 0x7f];
        let mut reader = &huge[..];
        assert!(matches!(
            read_frame(&mut reader, 1024).await,
            Err(DecodeError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(first in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(first, &body, Version::V3);
            let _ = decode(first, &body, Version::V5);
        }

        #[test]
        fn publish_round_trips(topic in "[a-z0-9/._-]{1,40}", payload in proptest::collection::vec(any::<u8>(), 0..300), retain in any::<bool>()) {
            let bytes = publish(Version::V3, &topic, &payload, retain);
            let mut r = Reader { bytes: &bytes[1..] };
            let len = r.varint().unwrap();
            prop_assert_eq!(len, r.bytes.len());
            let packet = decode(bytes[0], r.bytes, Version::V3).unwrap();
            prop_assert_eq!(packet, Packet::Publish(Publish { dup: false, qos: 0, retain, topic, packet_id: None, payload }));
        }
    }
}

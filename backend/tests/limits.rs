//! Limits and protocol rules at the connection layer, driven by raw sockets as an attacker (or a broken
//! device) would: connection caps and timeouts, slow subscribers, publish budgets, session takeover and
//! the MQTT packets the broker must refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::{MqttUnit, Seen};
use common::units::{Device, Fixture, device};
use rumqttc::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn link(fx: &Fixture, output: &str, input: &str) {
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": output, "i": input }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// A TCP connection from another loopback address than the test's own clients, so per-address caps
/// filled by it leave 127.0.0.1 alone.
async fn from_other_address(to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().unwrap())?;
    socket.connect(to).await
}

/// Reads until the peer closes; true if it did within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The value of a counter line in `/metrics`, 0 when absent.
async fn metric(fx: &Fixture, line_start: &str) -> f64 {
    let text = fx
        .server
        .client
        .get(format!("{}/metrics", fx.server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---- a raw MQTT 5 client ----

fn varint(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn connect_v5(client_id: &str, token: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0xc2, 0, 60, 0]);
    string(&mut body, client_id);
    string(&mut body, token);
    string(&mut body, "");
    frame(0x10, &body)
}

fn publish_v5(topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &body)
}

fn subscribe_v5(packet_id: u16, topic: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(0);
    string(&mut body, topic);
    body.push(qos);
    frame(0x82, &body)
}

/// One packet: its first byte and body; `None` at the end of the stream (or a packet cut short).
async fn read_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let first = stream.read_u8().await.ok()?;
    let mut len = 0usize;
    for shift in [0, 7, 14, 21] {
        let byte = stream.read_u8().await.ok()?;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// Waits (generously) for the next packet.
async fn next_packet(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(20), read_packet(stream))
        .await
        .expect("the broker answers")
}

/// Connects a unit over MQTT 5 and reads its CONNACK.
async fn raw_v5(fx: &Fixture, unit: &Device) -> TcpStream {
    let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
    stream
        .write_all(&connect_v5(&unit.uuid, &unit.token))
        .await
        .unwrap();
    let (first, body) = next_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK success");
    stream
}

/// Reads until the broker closes; the DISCONNECT reason it sent, if any.
async fn disconnect_reason(stream: &mut TcpStream) -> Option<u8> {
    let mut reason = None;
    while let Some((first, body)) = next_packet(stream).await {
        if first == 0xe0 {
            reason = body.first().copied();
        }
    }
    reason
}

#[tokio::test]
async fn half_sent_requests_and_idle_sockets_are_capped_and_timed_out_while_others_are_served() {
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.http_max_connections_per_ip = 20;
            c.http_header_read_timeout_seconds = 1;
            c.mqtt_max_connections_per_ip = 20;
        },
    )
    .await;
    let unit = device(&fx, "Bystander").await;
    let http: SocketAddr = fx
        .server
        .base
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut half_sent = Vec::new();
    let mut idle_mqtt = Vec::new();
    for _ in 0..100 {
        let mut stream = from_other_address(http).await.unwrap();
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await;
        half_sent.push(stream);
        idle_mqtt.push(from_other_address(fx.server.mqtt).await.unwrap());
    }
    // Others are served meanwhile.
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        fx.server
            .client
            .get(format!("{}/health", fx.server.base))
            .send(),
    )
    .await
    .expect("/health answers")
    .unwrap();
    assert!(health.status().is_success());
    let mut mqtt = unit.connect(&fx).await;
    mqtt.publish(&unit.topic("current_temp/pepeunit"), "1", QoS::AtLeastOnce)
        .await;
    assert!(matches!(
        mqtt.next(Duration::from_secs(20)).await,
        Some(Seen::PubAck(_))
    ));
    // Every half-sent request is closed: over the cap at once, the rest after the header timeout.
    for stream in &mut half_sent {
        assert!(
            closed_within(stream, Duration::from_secs(30)).await,
            "a half-sent request stayed open"
        );
    }
    // Over the MQTT cap, sockets are closed before anything is read.
    let mut closed = 0;
    for stream in &mut idle_mqtt {
        if closed_within(stream, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 80, "only {closed} of the 80 over the cap closed");
    assert!(metric(&fx, "pepeunit_limit_hits_total{limit=\"http_connections\"}").await >= 80.0);
    assert!(
        metric(
            &fx,
            "pepeunit_limit_hits_total{limit=\"http_header_read_timeout\"}"
        )
        .await
            >= 1.0
    );
    assert!(metric(&fx, "pepeunit_limit_hits_total{limit=\"mqtt_connections\"}").await >= 80.0);
}

#[tokio::test]
async fn an_anonymous_client_cannot_announce_a_large_first_packet() {
    let fx = Fixture::new(|_| {}).await;
    let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
    // A CONNECT announcing 200 KiB, of which nothing follows: refused at once, nothing allocated for it.
    stream.write_all(&[0x10, 0x80, 0x80, 0x0c]).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert_eq!(
        metric(
            &fx,
            "pepeunit_limit_hits_total{limit=\"mqtt_connect_bytes\"}"
        )
        .await,
        1.0
    );
}

/// Publishes `n` numbered QoS 0 values with `size`-byte payloads as fast as the client can.
async fn flood(mqtt: &MqttUnit, topic: &str, n: usize, size: usize) {
    for i in 0..n {
        let mut payload = format!("{i:08}").into_bytes();
        payload.resize(size, b'.');
        mqtt.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_every_message_or_is_disconnected_and_counted() {
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.mqtt_subscriber_queue = 16;
            c.mqtt_slow_subscriber_timeout_seconds = 1;
            c.mqtt_publish_rate = 0;
            c.mqtt_publish_bytes_per_second = 0;
        },
    )
    .await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    let output = sensor.topic("current_temp/pepeunit");
    link(
        &fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;
    let mut slow = raw_v5(&fx, &fan).await;
    slow.write_all(&subscribe_v5(1, &output, 0)).await.unwrap();
    let (first, _) = next_packet(&mut slow).await.unwrap();
    assert_eq!(first, 0x90, "SUBACK");
    // The fan stops reading while the sensor publishes far more than its socket and queue hold.
    let sensor_mqtt = sensor.connect(&fx).await;
    let n = 3000;
    flood(&sensor_mqtt, &output, n, 4096).await;
    // Then it reads what it got: a gap-free prefix, and either everything or the reason it was cut off.
    let mut expected = 0usize;
    let mut reason = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), read_packet(&mut slow)).await {
            Ok(Some((first, body))) if first & 0xf0 == 0x30 => {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let payload = &body[2 + topic_len + 1..];
                let seq: usize = std::str::from_utf8(&payload[..8]).unwrap().parse().unwrap();
                assert_eq!(seq, expected, "message {expected} was lost");
                expected += 1;
                if expected == n {
                    break;
                }
            }
            Ok(Some((0xe0, body))) => {
                reason = body.first().copied();
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => panic!("neither all messages nor a disconnect after {expected}"),
        }
    }
    if expected < n {
        assert!(
            reason.is_none() || reason == Some(0x97),
            "reason {reason:?}"
        );
        assert!(
            metric(&fx, "pepeunit_mqtt_slow_subscriber_disconnects_total").await >= 1.0,
            "the cut-off is counted"
        );
    }
}

#[tokio::test]
async fn a_reading_subscriber_gets_every_message_of_a_burst_larger_than_a_commit() {
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.mqtt_publish_rate = 0;
            c.mqtt_publish_bytes_per_second = 0;
        },
    )
    .await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    let output = sensor.topic("current_temp/pepeunit");
    link(
        &fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;
    let mut fan_mqtt = fan.connect(&fx).await;
    fan_mqtt
        .client
        .subscribe(&output, QoS::AtLeastOnce)
        .await
        .unwrap();
    fan_mqtt.quiet().await;
    let sensor_mqtt = sensor.connect(&fx).await;
    let n = 3000;
    flood(&sensor_mqtt, &output, n, 16).await;
    for i in 0..n {
        match fan_mqtt.next(Duration::from_secs(20)).await {
            Some(Seen::Message { payload, .. }) => {
                assert_eq!(payload[..8].parse::<usize>().unwrap(), i, "message {i}");
            }
            other => panic!("message {i}: saw {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_flooding_unit_is_cut_off_while_another_units_puback_stays_fast() {
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.mqtt_publish_rate = 50;
            c.mqtt_publish_burst = 100;
        },
    )
    .await;
    let noisy = device(&fx, "Noisy").await;
    let quiet = device(&fx, "Quiet").await;
    let mut raw = raw_v5(&fx, &noisy).await;
    let topic = noisy.topic("current_temp/pepeunit");
    let mut burst = Vec::new();
    for _ in 0..1000 {
        burst.extend(publish_v5(&topic, 0, 0, b"1"));
    }
    // The broker may close while the burst is still being written.
    let _ = raw.write_all(&burst).await;
    assert_eq!(disconnect_reason(&mut raw).await, Some(0x96));
    assert!(
        metric(
            &fx,
            "pepeunit_limit_hits_total{limit=\"mqtt_publish_rate\"}"
        )
        .await
            >= 1.0
    );
    let mut other = quiet.connect(&fx).await;
    other
        .publish(&quiet.topic("current_temp/pepeunit"), "2", QoS::AtLeastOnce)
        .await;
    assert!(matches!(
        other.next(Duration::from_secs(10)).await,
        Some(Seen::PubAck(_))
    ));
}

#[tokio::test]
async fn packet_id_zero_and_qos_2_are_refused_with_their_reasons() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Strict").await;
    let topic = unit.topic("current_temp/pepeunit");

    let mut raw = raw_v5(&fx, &unit).await;
    raw.write_all(&publish_v5(&topic, 1, 0, b"1"))
        .await
        .unwrap();
    assert_eq!(disconnect_reason(&mut raw).await, Some(0x82));

    let mut raw = raw_v5(&fx, &unit).await;
    raw.write_all(&publish_v5(&topic, 2, 7, b"1"))
        .await
        .unwrap();
    assert_eq!(disconnect_reason(&mut raw).await, Some(0x9b));

    // SUBACK grants at most QoS 1, and MQTT 5 clients are told the maximum in CONNACK.
    let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
    stream
        .write_all(&connect_v5(&unit.uuid, &unit.token))
        .await
        .unwrap();
    let (_, connack) = next_packet(&mut stream).await.unwrap();
    assert!(
        connack.windows(2).any(|w| w == [0x24, 1]),
        "Maximum QoS 1 in {connack:?}"
    );
    let input = unit.topic("set_fan_state/pepeunit");
    stream.write_all(&subscribe_v5(3, &input, 2)).await.unwrap();
    let (first, suback) = next_packet(&mut stream).await.unwrap();
    assert_eq!((first, suback.last().copied()), (0x90, Some(1)));
}

#[tokio::test]
async fn of_two_hundred_simultaneous_sessions_of_one_unit_exactly_one_stays_open() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Twin").await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
        stream
            .write_all(&connect_v5(&unit.uuid, &unit.token))
            .await
            .unwrap();
        streams.push(stream);
    }
    let results =
        futures_util::future::join_all(streams.into_iter().map(|mut stream| async move {
            let reason = disconnect_reason_or_open(&mut stream).await;
            (stream, reason)
        }))
        .await;
    let mut open: Vec<TcpStream> = Vec::new();
    let mut taken_over = 0;
    for (stream, reason) in results {
        match reason {
            Some(0x8e) => taken_over += 1,
            None => open.push(stream),
            Some(other) => panic!("closed with reason {other:#x}"),
        }
    }
    assert_eq!((taken_over, open.len()), (199, 1));
    // The survivor is a working session.
    let survivor = &mut open[0];
    survivor.write_all(&[0xc0, 0]).await.unwrap();
    assert_eq!(next_packet(survivor).await.map(|p| p.0), Some(0xd0));
}

/// Reads a CONNACK and then either the broker's DISCONNECT reason, or `None` once all the other sessions
/// are settled and this one is still open (a PINGREQ is answered).
async fn disconnect_reason_or_open(stream: &mut TcpStream) -> Option<u8> {
    let (first, _) = next_packet(stream).await.expect("CONNACK");
    assert_eq!(first, 0x20);
    // A taken-over session is closed as soon as a newer one registers; wait generously for that.
    match tokio::time::timeout(Duration::from_secs(15), read_packet(stream)).await {
        Ok(Some((0xe0, body))) => body.first().copied().or(Some(0)),
        Ok(other) => panic!("expected a DISCONNECT, saw {other:?}"),
        Err(_) => None,
    }
}

/// Resident memory of this process in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split(' ').nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// A measurement, not a check: `cargo nextest run --test limits -E 'test(idle_connection_memory)' --run-ignored only`.
#[tokio::test]
#[ignore = "a measurement; prints the memory an idle connected unit costs"]
async fn idle_connection_memory() {
    let fx = Fixture::new(|_| {}).await;
    let n = 400;
    let mut units = Vec::new();
    for i in 0..n {
        units.push(device(&fx, &format!("Idle {i}")).await);
    }
    // One connection first, so lazily built state is not counted per connection.
    let mut streams = vec![raw_v3(&fx, &units[0]).await];
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    for unit in &units[1..] {
        streams.push(raw_v3(&fx, unit).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "{} idle connections: RSS {before} KiB -> {after} KiB, {:.1} KiB per connection",
        n - 1,
        (after - before) as f64 / f64::from(n - 1)
    );
}

async fn raw_v3(fx: &Fixture, unit: &Device) -> TcpStream {
    let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[4, 0x82, 0, 60]);
    string(&mut body, &unit.uuid);
    string(&mut body, &unit.token);
    stream.write_all(&frame(0x10, &body)).await.unwrap();
    let (first, body) = next_packet(&mut stream).await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0));
    stream
}

// ---- protocol conformance: one test per rule ----

/// A raw MQTT 5 CONNECT (clean start) with the given keep-alive, Session Expiry Interval and, optionally,
/// a will (topic, payload, QoS, Will Delay Interval).
fn connect_v5_with(
    unit: &Device,
    keep_alive: u16,
    session_expiry: u32,
    will: Option<(&str, &[u8], u8, u32)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    let mut flags = 0xc2;
    if let Some((_, _, qos, _)) = will {
        flags |= 0x04 | (qos << 3);
    }
    body.extend_from_slice(&[5, flags]);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if session_expiry > 0 {
        body.extend_from_slice(&[5, 0x11]);
        body.extend_from_slice(&session_expiry.to_be_bytes());
    } else {
        body.push(0);
    }
    string(&mut body, &unit.uuid);
    if let Some((topic, payload, _, delay)) = will {
        if delay > 0 {
            body.extend_from_slice(&[5, 0x18]);
            body.extend_from_slice(&delay.to_be_bytes());
        } else {
            body.push(0);
        }
        string(&mut body, topic);
        body.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        body.extend_from_slice(payload);
    }
    string(&mut body, &unit.token);
    string(&mut body, "");
    frame(0x10, &body)
}

/// Sends `connect` and returns the stream with CONNACK's reason code.
async fn raw_connect(fx: &Fixture, connect: &[u8]) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(fx.server.mqtt).await.unwrap();
    stream.write_all(connect).await.unwrap();
    let (first, body) = next_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(first, 0x20, "CONNACK");
    (stream, body[1])
}

#[tokio::test]
async fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Silent").await;
    let started = std::time::Instant::now();
    let (mut stream, code) = raw_connect(&fx, &connect_v5_with(&unit, 1, 0, None)).await;
    assert_eq!(code, 0);
    // Nothing more is sent: after 1.5 s without a packet the broker says why and closes.
    assert_eq!(disconnect_reason(&mut stream).await, Some(0x8d));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before one and a half keep-alives",
        started.elapsed()
    );

    // Each packet restarts the count: a client pinging every half second outlives its 3 s allowance.
    let (mut stream, _) = raw_connect(&fx, &connect_v5_with(&unit, 2, 0, None)).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(&[0xc0, 0]).await.unwrap();
        assert_eq!(next_packet(&mut stream).await.map(|p| p.0), Some(0xd0));
    }
}

#[tokio::test]
async fn a_second_connect_on_a_connection_is_a_protocol_error() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Twice").await;
    let mut stream = raw_v5(&fx, &unit).await;
    stream
        .write_all(&connect_v5(&unit.uuid, &unit.token))
        .await
        .unwrap();
    assert_eq!(disconnect_reason(&mut stream).await, Some(0x82));
}

/// A sensor whose output is linked to a fan, and the fan subscribed to that output (SUBACK received).
async fn will_fixture() -> (Fixture, Device, MqttUnit, String) {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    link(
        &fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;
    let output = sensor.topic("current_temp/pepeunit");
    let mut fan_mqtt = fan.connect(&fx).await;
    fan_mqtt.subscribe_acked(&output).await;
    (fx, sensor, fan_mqtt, output)
}

/// The fan's next message payload.
async fn received(fan: &mut MqttUnit) -> String {
    match fan.next(Duration::from_secs(20)).await {
        Some(Seen::Message { payload, .. }) => payload,
        other => panic!("expected the will, saw {other:?}"),
    }
}

#[tokio::test]
async fn a_will_is_published_when_a_connection_drops_and_not_after_disconnect() {
    let (fx, sensor, mut fan, output) = will_fixture().await;
    for qos in [0u8, 1] {
        let (stream, code) = raw_connect(
            &fx,
            &connect_v5_with(&sensor, 60, 0, Some((&output, b"lost", qos, 0))),
        )
        .await;
        assert_eq!(code, 0);
        // The connection drops without a DISCONNECT: the will goes out.
        drop(stream);
        assert_eq!(received(&mut fan).await, "lost");
    }

    // A DISCONNECT (reason 0) ends the session normally: no will.
    let (mut stream, _) = raw_connect(
        &fx,
        &connect_v5_with(&sensor, 60, 0, Some((&output, b"gone", 1, 0))),
    )
    .await;
    stream.write_all(&[0xe0, 1, 0]).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(20)).await);
    fan.quiet().await;

    // MQTT 5 reason 0x04 asks for the will with the DISCONNECT.
    let (mut stream, _) = raw_connect(
        &fx,
        &connect_v5_with(&sensor, 60, 0, Some((&output, b"asked", 1, 0))),
    )
    .await;
    stream.write_all(&[0xe0, 1, 0x04]).await.unwrap();
    assert!(closed_within(&mut stream, Duration::from_secs(20)).await);
    assert_eq!(received(&mut fan).await, "asked");
}

#[tokio::test]
async fn a_will_on_a_topic_the_unit_may_not_publish_to_is_refused_at_connect() {
    let (fx, sensor, mut fan, _) = will_fixture().await;
    // Its own input is not a topic a unit may publish to.
    let input = sensor.topic("set_fan_state/pepeunit");
    let (_, code) = raw_connect(
        &fx,
        &connect_v5_with(&sensor, 60, 0, Some((&input, b"x", 0, 0))),
    )
    .await;
    assert_eq!(code, 0x87, "CONNACK Not authorized");
    fan.quiet().await;
}

#[tokio::test]
async fn a_delayed_will_waits_its_delay_and_is_not_sent_if_the_unit_is_back() {
    let (fx, sensor, mut fan, output) = will_fixture().await;
    // A will delayed by 1 s in a session kept for a minute goes out after the delay.
    let started = std::time::Instant::now();
    let (stream, _) = raw_connect(
        &fx,
        &connect_v5_with(&sensor, 60, 60, Some((&output, b"late", 0, 1))),
    )
    .await;
    drop(stream);
    assert_eq!(received(&mut fan).await, "late");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "sent before its delay"
    );

    // The unit comes back (here by taking its old connection over) before the delay is over: the will
    // is never sent. Waiting past the delay shows it.
    let (mut old, _) = raw_connect(
        &fx,
        &connect_v5_with(&sensor, 60, 60, Some((&output, b"late", 0, 1))),
    )
    .await;
    let (_back, code) = raw_connect(&fx, &connect_v5_with(&sensor, 60, 60, None)).await;
    assert_eq!(code, 0);
    assert_eq!(disconnect_reason(&mut old).await, Some(0x8e));
    tokio::time::sleep(Duration::from_secs(2)).await;
    fan.quiet().await;
}

// ---- firmware bundles ----

#[tokio::test]
async fn bundle_downloads_over_the_concurrency_limit_get_503_until_a_slot_frees() {
    // An 8 MiB incompressible file, so a download the client stops reading stays in the middle of it.
    let fx = Fixture::with_config(
        |source| {
            let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
            let blob: Vec<u8> = (0..8 * 1024 * 1024 / 8)
                .flat_map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state.to_le_bytes()
                })
                .collect();
            source.write("blob.bin", blob);
            source.commit("a large blob");
        },
        |c| {
            c.bundle_concurrency = 1;
            c.bundle_wait_seconds = 1;
            c.repository_size_limit_bytes = 64 * 1024 * 1024;
        },
    )
    .await;
    let unit = device(&fx, "Bundled").await;
    let path = format!("/api/v1/units/firmware/tar/{}", unit.uuid);

    // A client takes the only slot and stops reading after the headers; a small receive buffer keeps the
    // kernel from reading the rest for it.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let addr: SocketAddr = fx
        .server
        .base
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut holder = socket.connect(addr).await.unwrap();
    holder
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nx-auth-token: {}\r\n\r\n",
                fx.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        holder.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // Meanwhile another download waits for the slot, then is refused.
    let url = fx.server.url(&path);
    let refused = fx
        .server
        .client
        .get(&url)
        .header("x-auth-token", &fx.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");

    // Once the first client goes away its slot frees, and downloads work again.
    drop(holder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = fx
            .server
            .client
            .get(&url)
            .header("x-auth-token", &fx.token)
            .send()
            .await
            .unwrap();
        if response.status() == reqwest::StatusCode::OK {
            let bytes = response.bytes().await.unwrap();
            assert!(bytes.len() > 8 * 1024 * 1024, "{} bytes", bytes.len());
            break;
        }
        assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}

#[tokio::test]
async fn an_mqtt5_receive_maximum_bounds_unacknowledged_deliveries() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    link(
        &fx,
        &sensor.node("current_temp/pepeunit"),
        &fan.node("set_fan_state/pepeunit"),
    )
    .await;
    let output = sensor.topic("current_temp/pepeunit");
    // The fan takes at most two QoS 1 deliveries unacknowledged.
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[5, 0xc2, 0, 60, 3, 0x21, 0, 2]);
    string(&mut body, &fan.uuid);
    string(&mut body, &fan.token);
    string(&mut body, "");
    let (mut stream, code) = raw_connect(&fx, &frame(0x10, &body)).await;
    assert_eq!(code, 0);
    stream
        .write_all(&subscribe_v5(1, &output, 1))
        .await
        .unwrap();
    assert_eq!(next_packet(&mut stream).await.map(|p| p.0), Some(0x90));
    let mut sensor_mqtt = sensor.connect(&fx).await;
    for i in 0..5 {
        sensor_mqtt
            .publish(&output, &i.to_string(), QoS::AtLeastOnce)
            .await;
    }
    for _ in 0..5 {
        assert!(matches!(
            sensor_mqtt.next(Duration::from_secs(20)).await,
            Some(Seen::PubAck(_))
        ));
    }
    // Every message is routed by now; two arrive, then nothing until one is acknowledged.
    let mut ids = Vec::new();
    for expected in ["0", "1"] {
        let (first, body) = next_packet(&mut stream).await.unwrap();
        assert_eq!(first, 0x32, "a QoS 1 PUBLISH");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        ids.push([body[2 + topic_len], body[3 + topic_len]]);
        assert_eq!(&body[2 + topic_len + 3..], expected.as_bytes());
    }
    let more = tokio::time::timeout(Duration::from_millis(500), read_packet(&mut stream)).await;
    assert!(
        more.is_err(),
        "a third delivery beyond Receive Maximum: {more:?}"
    );
    stream
        .write_all(&[0x40, 2, ids[0][0], ids[0][1]])
        .await
        .unwrap();
    let (first, body) = next_packet(&mut stream).await.unwrap();
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    assert_eq!((first, &body[2 + topic_len + 3..]), (0x32, &b"2"[..]));
}

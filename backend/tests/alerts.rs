//! Alerts end to end: real units over MQTT to the embedded broker, the bot long-polling a stub of the
//! Telegram Bot API (the one allowed fake), webhooks to a receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use common::mqtt::{MqttUnit, Seen};
use common::telegram::{Failure, TOKEN, TelegramStub};
use common::units::{Device, Fixture, device};
use hmac::{Hmac, Mac};
use pepeunit_backend::config::Secret;
use rumqttc::QoS;
use serde_json::{Value, json};
use sha2::Sha256;

/// A server whose bot talks to `stub`, with alice and her repo_unit.
async fn setup(stub: &TelegramStub) -> Fixture {
    let url = stub.url.clone();
    Fixture::with_config(
        |_| {},
        move |c| {
            c.telegram_bot_token = Some(Secret::new(TOKEN));
            c.telegram_api_url = Some(url);
        },
    )
    .await
}

async fn gql(fx: &Fixture, token: &str, query: &str, variables: Value) -> Value {
    let (_, body) = fx.server.gql(query, variables, Some(token)).await;
    assert!(body["errors"].is_null(), "{query}: {body}");
    body["data"].clone()
}

async fn link_code(fx: &Fixture, token: &str) -> String {
    gql(
        fx,
        token,
        "mutation { createTelegramLinkCode { code expiresAt } }",
        json!({}),
    )
    .await["createTelegramLinkCode"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Links `chat` to the user of `token`.
async fn link(fx: &Fixture, stub: &TelegramStub, token: &str, chat: i64) {
    let code = link_code(fx, token).await;
    let reply = stub.ask(chat, &format!("/start {code}")).await;
    assert!(reply.starts_with("Linked to"), "{reply}");
}

async fn rule(fx: &Fixture, input: Value) -> String {
    gql(
        fx,
        &fx.token,
        "mutation($i: CreateAlertRuleInput!) { createAlertRule(input: $i) { uuid state } }",
        json!({ "i": input }),
    )
    .await["createAlertRule"]["uuid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the broker counts the unit as connected (or not), as the API shows it.
async fn wait_online(fx: &Fixture, unit: &Device, online: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let data = gql(
            fx,
            &fx.token,
            "query($u: ID!) { unit(uuid: $u) { online } }",
            json!({ "u": unit.uuid }),
        )
        .await;
        if data["unit"]["online"] == json!(online) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "unit never became online={online}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes values at QoS 1, each acknowledged (so stored and handed to alerting) before the next.
async fn publish_values(mqtt: &mut MqttUnit, topic: &str, values: &[&str]) {
    for value in values {
        mqtt.publish(topic, value, QoS::AtLeastOnce).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match mqtt.next(Duration::from_secs(30)).await {
                Some(Seen::PubAck(_)) => break,
                Some(Seen::Message { .. }) => {}
                other => panic!("expected a PUBACK, saw {other:?}"),
            }
            assert!(Instant::now() < deadline, "no PUBACK");
        }
    }
}

/// Messages to `chat` that mention `unit`.
fn about(stub: &TelegramStub, chat: i64, unit: &str) -> Vec<String> {
    stub.sent(chat)
        .into_iter()
        .filter(|t| t.contains(unit))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_linked_with_a_one_time_code_and_a_wrong_or_reused_one_is_refused() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    let code = link_code(&fx, &fx.token).await;

    let wrong = stub
        .ask(1001, "/start 00000000000000000000000000000000")
        .await;
    assert!(wrong.contains("not valid"), "{wrong}");
    let not_linked = stub.ask(1001, "/units").await;
    assert!(not_linked.contains("not linked"), "{not_linked}");

    let linked = stub.ask(1001, &format!("/start {code}")).await;
    assert!(linked.starts_with("Linked to alice"), "{linked}");
    let reused = stub.ask(1002, &format!("/start {code}")).await;
    assert!(reused.contains("not valid"), "{reused}");
    let still_not = stub.ask(1002, "/units").await;
    assert!(still_not.contains("not linked"), "{still_not}");

    let channels = gql(
        &fx,
        &fx.token,
        "{ alertChannels { kind telegramChatId paused } }",
        json!({}),
    )
    .await;
    assert_eq!(
        channels["alertChannels"],
        json!([{ "kind": "telegram", "telegramChatId": 1001, "paused": false }])
    );

    let sensor = device(&fx, "Linked-sensor").await;
    let units = stub.ask(1001, "/units").await;
    assert!(units.contains("Linked-sensor — offline"), "{units}");

    let unlinked = stub.ask(1001, "/unlink").await;
    assert!(unlinked.starts_with("Unlinked"), "{unlinked}");
    let after = stub
        .ask(
            1001,
            &format!("/unit {}", sensor.unit["name"].as_str().unwrap()),
        )
        .await;
    assert!(after.contains("not linked"), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_crossing_and_its_return_give_one_alert_and_one_back_to_normal() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 2001).await;
    let sensor = device(&fx, "Greenhouse").await;
    rule(
        &fx,
        json!({ "kind": "ABOVE", "nodeUuid": sensor.node("current_temp/pepeunit"),
                "threshold": 30.0, "hysteresis": 2.0 }),
    )
    .await;
    let mut mqtt = sensor.connect(&fx).await;
    let topic = sensor.topic("current_temp/pepeunit");
    // Crosses at 31.5, stays past or inside the hysteresis band (29, 31, 28.5), returns at 27.5.
    publish_values(
        &mut mqtt,
        &topic,
        &["20", "31.5", "35", "29", "31", "28.5", "27.5", "26", "25"],
    )
    .await;

    stub.wait_for(2001, 0, |t| t.contains("back to normal"))
        .await;
    // Alerts are evaluated and delivered in order: anything the earlier values fired came before this.
    let alerts = about(&stub, 2001, "Greenhouse");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].starts_with('⚠'), "{}", alerts[0]);
    assert!(
        alerts[0].contains("Greenhouse: current_temp = 31.5 is above 30 at "),
        "{}",
        alerts[0]
    );
    assert!(alerts[0].ends_with(" UTC"), "{}", alerts[0]);
    assert!(
        alerts[1].contains("Greenhouse: current_temp = 27.5 is back to normal at "),
        "{}",
        alerts[1]
    );

    let history = gql(
        &fx,
        &fx.token,
        "{ alerts { kind ruleKind unitName variable value } alertRules { state lastFiredAt } }",
        json!({}),
    )
    .await;
    assert_eq!(
        history["alerts"],
        json!([
            { "kind": "resolved", "ruleKind": "above", "unitName": "Greenhouse", "variable": "current_temp", "value": "27.5" },
            { "kind": "fired", "ruleKind": "above", "unitName": "Greenhouse", "variable": "current_temp", "value": "31.5" },
        ])
    );
    assert_eq!(history["alertRules"][0]["state"], "normal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_going_offline_and_coming_back_gives_one_message_each() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 3001).await;
    let unit = device(&fx, "Doorbell").await;
    let mqtt = unit.connect(&fx).await;
    wait_online(&fx, &unit, true).await;
    rule(
        &fx,
        json!({ "kind": "OFFLINE", "unitUuid": unit.uuid, "timeoutSeconds": 1 }),
    )
    .await;

    mqtt.client.disconnect().await.unwrap();
    let offline = stub.wait_for(3001, 0, |t| t.contains("is offline")).await;
    assert!(offline.contains("Doorbell is offline since "), "{offline}");

    let _back = unit.connect(&fx).await;
    let online = stub.wait_for(3001, 0, |t| t.contains("back online")).await;
    assert!(online.contains("Doorbell is back online at "), "{online}");
    assert_eq!(about(&stub, 3001, "Doorbell").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_gives_one_message_per_failed_commit() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 4001).await;
    let unit = device(&fx, "Thermostat").await;
    rule(
        &fx,
        json!({ "kind": "UPDATE_FAILED", "unitUuid": unit.uuid }),
    )
    .await;
    let mut mqtt = unit.connect(&fx).await;
    let state = unit.base(&fx, "output_base_topic", "state");
    let failed = |commit: &str| {
        json!({ "pu_commit_version": "0000000", "pu_update_failure": { "commit": commit, "reason": "firmware hash mismatch" } })
            .to_string()
    };
    let (first, second) = (failed("abc1234def"), failed("fff9999aaa"));
    // The unit repeats its state: the same failure is one alert.
    publish_values(&mut mqtt, &state, &[&first, &first, &second]).await;

    stub.wait_for(4001, 0, |t| t.contains("fff9999a")).await;
    let alerts = about(&stub, 4001, "Thermostat");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(
        alerts[0].contains("Thermostat: the update to abc1234def failed at ")
            && alerts[0].contains("firmware hash mismatch"),
        "{}",
        alerts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_from_the_bot_reaches_the_unit_and_a_user_without_write_access_is_refused() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 5001).await;
    let (_, bob) = fx.server.user("bob").await;
    link(&fx, &stub, &bob, 5002).await;
    let fan = device(&fx, "Fan").await;
    let mut mqtt = fan.connect(&fx).await;
    let input = fan.topic("set_fan_state/pepeunit");
    mqtt.client
        .subscribe(&input, QoS::AtLeastOnce)
        .await
        .unwrap();

    let reply = stub.ask(5001, "/set Fan set_fan_state 1").await;
    assert_eq!(reply, "set_fan_state of Fan set to 1.");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the unit never got its input");
        match mqtt.next(Duration::from_secs(30)).await {
            Some(Seen::Message { topic, payload, .. }) if topic == input => {
                assert_eq!(payload, "1");
                break;
            }
            Some(Seen::Closed(why)) => panic!("the unit was disconnected: {why}"),
            None => panic!("the unit never got its input"),
            _ => {}
        }
    }

    let refused = stub.ask(5002, "/set Fan set_fan_state 0").await;
    assert!(
        refused.starts_with("You may not set set_fan_state of Fan"),
        "{refused}"
    );
    let unit = fx.unit(&fx.token, &fan.uuid).await;
    assert_eq!(
        common::units::node(&unit, "set_fan_state/pepeunit")["lastValue"],
        "1",
        "a refused /set changes nothing"
    );

    let shown = stub.ask(5001, "/unit Fan").await;
    assert!(shown.contains("Fan — online"), "{shown}");
    assert!(shown.contains("• set_fan_state = 1"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_429_and_500_are_waited_out_and_the_alert_arrives_once() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 6001).await;
    let sensor = device(&fx, "Boiler").await;
    rule(
        &fx,
        json!({ "kind": "ABOVE", "nodeUuid": sensor.node("current_temp/pepeunit"), "threshold": 90.0 }),
    )
    .await;
    let sends_before = stub.calls("sendMessage");
    stub.fail_next(&[Failure::RetryAfter(1), Failure::ServerError]);
    let mut mqtt = sensor.connect(&fx).await;
    publish_values(&mut mqtt, &sensor.topic("current_temp/pepeunit"), &["95"]).await;

    stub.wait_for(6001, 0, |t| t.contains("Boiler: current_temp = 95"))
        .await;
    assert_eq!(about(&stub, 6001, "Boiler").len(), 1);
    assert_eq!(
        stub.calls("sendMessage") - sends_before,
        3,
        "a 429, a 500, then the delivery"
    );
    let channels = gql(
        &fx,
        &fx.token,
        "{ alertChannels { paused failures } }",
        json!({}),
    )
    .await;
    assert_eq!(
        channels["alertChannels"],
        json!([{ "paused": false, "failures": 0 }])
    );
}

/// A webhook receiver on loopback: records each request's headers and body.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

async fn receiver() -> Receiver {
    let got: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, got }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_each_alert_once_signed_with_its_secret() {
    let fx = Fixture::new(|_| {}).await;
    let hook = receiver().await;
    let created = gql(
        &fx,
        &fx.token,
        "mutation($u: String!) { createWebhookChannel(url: $u) { secret channel { kind webhookUrl } } }",
        json!({ "u": hook.url }),
    )
    .await;
    let secret = created["createWebhookChannel"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let sensor = device(&fx, "Freezer").await;
    rule(
        &fx,
        json!({ "kind": "BELOW", "nodeUuid": sensor.node("current_temp/pepeunit"), "threshold": -10.0 }),
    )
    .await;
    let mut mqtt = sensor.connect(&fx).await;
    publish_values(
        &mut mqtt,
        &sensor.topic("current_temp/pepeunit"),
        &["-2", "-18", "-12", "-5"],
    )
    .await;

    // Fired at -18, nothing at -12 (still below), resolved at -5.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hook.got.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook got {:?}",
            hook.got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let mut ids = Vec::new();
    for (headers, body) in &got {
        let signature = headers["x-pepeunit-signature"].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        assert_eq!(
            signature,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            "signature over the exact body"
        );
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["x-pepeunit-alert-id"].to_str().unwrap(), json["id"]);
        ids.push(json["id"].as_str().unwrap().to_owned());
    }
    assert_ne!(ids[0], ids[1]);
    let first: Value = serde_json::from_str(&got[0].1).unwrap();
    let second: Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!(
        (
            first["kind"].as_str(),
            first["value"].as_str(),
            first["unit"]["name"].as_str()
        ),
        (Some("fired"), Some("-18"), Some("Freezer"))
    );
    assert_eq!(
        (second["kind"].as_str(), second["value"].as_str()),
        (Some("resolved"), Some("-5"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_a_private_address_is_refused_unless_local_remotes_are_allowed() {
    let server = TestServer::start().await;
    let (_, token) = server.user("carol").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
    ] {
        let (_, body) = server
            .gql(
                "mutation($u: String!) { createWebhookChannel(url: $u) { secret } }",
                json!({ "u": url }),
                Some(&token),
            )
            .await;
        assert_eq!(common::code(&body), "VALIDATION", "{url}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("allow_local_remotes"),
            "{body}"
        );
    }
    let (_, body) = server
        .gql(
            "mutation { createWebhookChannel(url: \"ftp://example.com/x\") { secret } }",
            json!({}),
            Some(&token),
        )
        .await;
    assert_eq!(common::code(&body), "VALIDATION", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_button_sets_the_input_over_mqtt_and_a_user_without_write_access_is_refused() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 8001).await;
    let (_, bob) = fx.server.user("bob").await;
    link(&fx, &stub, &bob, 8002).await;
    let fan = device(&fx, "Attic-fan").await;
    let mut mqtt = fan.connect(&fx).await;
    let input = fan.topic("set_fan_state/pepeunit");
    mqtt.client
        .subscribe(&input, QoS::AtLeastOnce)
        .await
        .unwrap();
    gql(
        &fx,
        &fx.token,
        "mutation($i: CreateBoardInput!) { createBoard(input: $i) { uuid } }",
        json!({ "i": { "name": "Attic", "items": [
            { "nodeUuid": fan.node("set_fan_state/pepeunit"), "label": "Fan on", "value": "1" },
            { "nodeUuid": fan.node("set_fan_state/pepeunit"), "label": "Fan off", "value": "0" },
            { "nodeUuid": fan.node("current_temp/pepeunit"), "label": "Temperature" },
        ] } }),
    )
    .await;

    let list = stub.ask(8001, "/boards").await;
    assert_eq!(list, "Your boards:");
    let listing = stub.messages(8001).pop().unwrap();
    stub.press(8001, 8001, listing.id, &listing.button("Attic"));
    let board = stub
        .until("the board", |s| {
            s.messages(8001)
                .into_iter()
                .find(|m| m.text.starts_with("📋 Attic"))
        })
        .await;
    assert!(board.text.contains("• Temperature: —"), "{}", board.text);

    // Alice (may write) presses "Fan on": the unit gets 1 over MQTT, the message shows it.
    stub.press(8001, 8001, board.id, &board.button("Fan on"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the unit never got its input");
        match mqtt.next(Duration::from_secs(30)).await {
            Some(Seen::Message { topic, payload, .. }) if topic == input => {
                assert_eq!(payload, "1");
                break;
            }
            Some(Seen::Closed(why)) => panic!("the unit was disconnected: {why}"),
            None => panic!("the unit never got its input"),
            _ => {}
        }
    }
    let edited = stub
        .until("the edit", |s| s.edits(8001, board.id).pop())
        .await;
    assert!(edited.contains("• Fan on: 1"), "{edited}");
    assert!(stub.callback_answers().contains(&"Set to 1".to_owned()));

    // Bob (may see, may not write) presses "Fan off" under the same message: refused, nothing set.
    stub.press(8001, 8002, board.id, &board.button("Fan off"));
    stub.until("bob's refusal", |s| {
        s.callback_answers()
            .contains(&"You may not set this input.".to_owned())
            .then_some(())
    })
    .await;
    let unit = fx.unit(&fx.token, &fan.uuid).await;
    assert_eq!(
        common::units::node(&unit, "set_fan_state/pepeunit")["lastValue"],
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_rollout_gives_one_message() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 9001).await;
    let v1 = common::git::git(&fx.source.work, &["rev-parse", "HEAD"]);
    fx.create_unit(
        &fx.token,
        json!({ "name": "Pinned", "followsDefaultBranch": false, "branch": "main", "commit": v1 }),
    )
    .await;
    fx.source.write("main.py", "print('v2')\n");
    let v2 = fx.source.commit("v2");
    fx.push_and_sync().await;
    rule(
        &fx,
        json!({ "kind": "ROLLOUT_HALTED", "repoUnitUuid": fx.repo_unit }),
    )
    .await;
    // The one unit never reports: its wave times out, 1 of 1 failed, above 0%.
    gql(
        &fx,
        &fx.token,
        "mutation($i: StartRolloutInput!) { startRollout(input: $i) { uuid } }",
        json!({ "i": { "repoUnitUuid": fx.repo_unit, "commit": v2, "batchSize": 1,
                       "maxFailureRatio": 0.0, "waveTimeoutSeconds": 1 } }),
    )
    .await;
    let halted = stub.wait_for(9001, 0, |t| t.contains("halted")).await;
    assert!(
        halted.contains("the rollout of Firmware halted at ") && halted.contains("1 of 1"),
        "{halted}"
    );
    assert_eq!(
        stub.sent(9001)
            .iter()
            .filter(|t| t.contains("halted"))
            .count(),
        1
    );
}

/// Waits until the unit gets `expected` on `topic` over MQTT.
async fn expect_input(mqtt: &mut MqttUnit, topic: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the unit never got {expected}");
        match mqtt.next(Duration::from_secs(30)).await {
            Some(Seen::Message {
                topic: t, payload, ..
            }) if t == topic && payload == expected => {
                return;
            }
            Some(Seen::Closed(why)) => panic!("the unit was disconnected: {why}"),
            None => panic!("the unit never got {expected}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_button_without_a_value_asks_for_one_and_the_reply_sets_the_input() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 8101).await;
    let (_, bob) = fx.server.user("bob").await;
    link(&fx, &stub, &bob, 8102).await;
    let fan = device(&fx, "Barn-fan").await;
    let mut mqtt = fan.connect(&fx).await;
    let input = fan.topic("set_fan_state/pepeunit");
    mqtt.client
        .subscribe(&input, QoS::AtLeastOnce)
        .await
        .unwrap();
    gql(
        &fx,
        &fx.token,
        "mutation($i: CreateBoardInput!) { createBoard(input: $i) { uuid } }",
        json!({ "i": { "name": "Barn", "items": [
            { "nodeUuid": fan.node("set_fan_state/pepeunit"), "label": "Fan speed" },
        ] } }),
    )
    .await;
    stub.ask(8101, "/boards").await;
    let listing = stub.messages(8101).pop().unwrap();
    stub.press(8101, 8101, listing.id, &listing.button("Barn"));
    let board = stub
        .until("the board", |s| {
            s.messages(8101)
                .into_iter()
                .find(|m| m.text.starts_with("📋 Barn"))
        })
        .await;

    // Alice presses "Fan speed: set…": the bot asks, with ForceReply, for the value.
    stub.press(8101, 8101, board.id, &board.button("Fan speed"));
    let prompt = stub
        .until("the prompt", |s| {
            s.messages(8101)
                .into_iter()
                .find(|m| m.text.contains("Send the value for Fan speed"))
        })
        .await;
    assert_eq!(
        prompt.keyboard["force_reply"],
        json!(true),
        "{}",
        prompt.keyboard
    );
    assert_eq!(prompt.keyboard["input_field_placeholder"], "Fan speed");

    // Bob's reply to Alice's prompt does not count.
    let before = stub.sent(8101).len();
    stub.reply(8101, 8102, prompt.id, &prompt.text, "0");
    let not_his = stub.wait_for(8101, before, |_| true).await;
    assert_eq!(not_his, "This question is for whoever pressed the button.");

    // Alice's reply sets the input: the unit gets it over MQTT, the board shows it.
    let before = stub.sent(8101).len();
    stub.reply(8101, 8101, prompt.id, &prompt.text, "42");
    let done = stub.wait_for(8101, before, |_| true).await;
    assert_eq!(done, "Fan speed set to 42.");
    expect_input(&mut mqtt, &input, "42").await;
    let edited = stub
        .until("the edit", |s| s.edits(8101, board.id).pop())
        .await;
    assert!(edited.contains("• Fan speed: 42"), "{edited}");

    // The prompt is spent: a second reply is refused with a clear answer and sets nothing.
    let before = stub.sent(8101).len();
    stub.reply(8101, 8101, prompt.id, &prompt.text, "7");
    let spent = stub.wait_for(8101, before, |_| true).await;
    assert!(spent.contains("expired or was answered"), "{spent}");

    // Bob may see the unit's input but not write it: his press is refused and asks nothing.
    let prompts_before = stub
        .messages(8101)
        .iter()
        .filter(|m| m.text.contains("Send the value"))
        .count();
    stub.press(8101, 8102, board.id, &board.button("Fan speed"));
    stub.until("bob's refusal", |s| {
        s.callback_answers()
            .contains(&"You may not set this input.".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(
        stub.messages(8101)
            .iter()
            .filter(|m| m.text.contains("Send the value"))
            .count(),
        prompts_before
    );
    let unit = fx.unit(&fx.token, &fan.uuid).await;
    assert_eq!(
        common::units::node(&unit, "set_fan_state/pepeunit")["lastValue"],
        "42"
    );
}

/// POSTs `update` to the bot's webhook as Telegram does, with `secret` in its header if given.
async fn post_update(url: &str, update: &Value, secret: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(update.to_string());
    if let Some(secret) = secret {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webhook_mode_the_bot_sets_its_webhook_and_takes_updates_only_with_its_secret_token() {
    let stub = TelegramStub::start().await;
    let api = stub.url.clone();
    let fx = Fixture::with_config(
        |_| {},
        move |c| {
            c.telegram_bot_token = Some(Secret::new(TOKEN));
            c.telegram_api_url = Some(api);
            c.telegram_mode = pepeunit_backend::config::TelegramMode::Webhook;
        },
    )
    .await;
    let (hook, secret) = stub.until("setWebhook", |s| s.webhook()).await;
    assert_eq!(hook, fx.server.url("/api/v1/telegram/webhook"));
    assert!(secret.len() >= 32, "{secret}");

    let code = link_code(&fx, &fx.token).await;
    let update = stub.update_json(9101, &format!("/start {code}"));
    assert_eq!(post_update(&hook, &update, None).await, 401);
    assert_eq!(post_update(&hook, &update, Some("wrong")).await, 401);
    assert_eq!(
        post_update(&hook, &json!({ "not": "an update" }), Some(&secret)).await,
        400
    );
    assert_eq!(post_update(&hook, &update, Some(&secret)).await, 200);
    // Had a refused POST been handled, it would have spent the code and this would be a refusal.
    let linked = stub.wait_for(9101, 0, |_| true).await;
    assert!(linked.starts_with("Linked to alice"), "{linked}");
    let units = stub.update_json(9101, "/units");
    assert_eq!(post_update(&hook, &units, Some(&secret)).await, 200);
    stub.wait_for(9101, 1, |t| t.contains("no units")).await;
    assert_eq!(stub.calls("getUpdates"), 0, "no polling in webhook mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_in_polling_mode_the_bot_deletes_the_webhook_and_refuses_webhook_posts() {
    let stub = TelegramStub::start().await;
    // As a run in webhook mode leaves it: getUpdates is refused until the webhook is deleted.
    stub.set_webhook("https://pepeunit.example/api/v1/telegram/webhook");
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 9201).await;
    assert!(stub.webhook().is_none());
    assert!(stub.calls("deleteWebhook") >= 1);
    let update = stub.update_json(9201, "/units");
    assert_eq!(
        post_update(
            &fx.server.url("/api/v1/telegram/webhook"),
            &update,
            Some("old")
        )
        .await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_for_the_timeout_gives_one_alert_and_a_value_ends_it() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 9301).await;
    let sensor = device(&fx, "Beehive").await;
    rule(
        &fx,
        json!({ "kind": "NO_VALUE", "nodeUuid": sensor.node("current_temp/pepeunit"), "timeoutSeconds": 1 }),
    )
    .await;
    let mut mqtt = sensor.connect(&fx).await;
    let topic = sensor.topic("current_temp/pepeunit");
    publish_values(&mut mqtt, &topic, &["21"]).await;

    let silent = stub.wait_for(9301, 0, |t| t.contains("no value")).await;
    assert!(
        silent.contains("Beehive: no value from current_temp for 1 s (since "),
        "{silent}"
    );
    publish_values(&mut mqtt, &topic, &["22"]).await;
    let back = stub.wait_for(9301, 0, |t| t.contains("values again")).await;
    assert!(
        back.contains("Beehive: current_temp has values again: 22 at "),
        "{back}"
    );
    let alerts = about(&stub, 9301, "Beehive");
    assert_eq!(alerts.len(), 2, "one alert, one end: {alerts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_rule_records_its_alerts_but_sends_none() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 9401).await;
    let sensor = device(&fx, "Cellar").await;
    let uuid = rule(
        &fx,
        json!({ "kind": "ABOVE", "nodeUuid": sensor.node("current_temp/pepeunit"), "threshold": 30.0 }),
    )
    .await;
    let muted = gql(
        &fx,
        &fx.token,
        "mutation($u: ID!) { muteAlertRule(uuid: $u, minutes: 60) { mutedUntil } }",
        json!({ "u": uuid }),
    )
    .await;
    assert!(muted["muteAlertRule"]["mutedUntil"].is_string());
    let mut mqtt = sensor.connect(&fx).await;
    let topic = sensor.topic("current_temp/pepeunit");
    publish_values(&mut mqtt, &topic, &["35"]).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = gql(&fx, &fx.token, "{ alerts { kind value muted } }", json!({})).await;
        if history["alerts"] == json!([{ "kind": "fired", "value": "35", "muted": true }]) {
            break;
        }
        assert!(Instant::now() < deadline, "no muted alert: {history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unmuted, the return to normal is sent; deliveries to a chat keep their order, so a muted alert
    // that had been sent would have come before it.
    gql(
        &fx,
        &fx.token,
        "mutation($u: ID!) { muteAlertRule(uuid: $u, minutes: 0) { mutedUntil } }",
        json!({ "u": uuid }),
    )
    .await;
    publish_values(&mut mqtt, &topic, &["20"]).await;
    stub.wait_for(9401, 0, |t| t.contains("back to normal"))
        .await;
    let alerts = about(&stub, 9401, "Cellar");
    assert_eq!(alerts.len(), 1, "only the unmuted alert: {alerts:?}");
    let history = gql(&fx, &fx.token, "{ alerts { kind muted } }", json!({})).await;
    assert_eq!(
        history["alerts"],
        json!([{ "kind": "resolved", "muted": false }, { "kind": "fired", "muted": true }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_channel_keeps_its_alerts_and_sends_them_in_order_when_resumed() {
    let stub = TelegramStub::start().await;
    let fx = setup(&stub).await;
    link(&fx, &stub, &fx.token, 9501).await;
    let sensor = device(&fx, "Kiln").await;
    rule(
        &fx,
        json!({ "kind": "ABOVE", "nodeUuid": sensor.node("current_temp/pepeunit"), "threshold": 900.0 }),
    )
    .await;
    // The user blocked the bot: retrying cannot help, the channel is paused at once.
    stub.fail_next(&[Failure::Blocked]);
    let mut mqtt = sensor.connect(&fx).await;
    let topic = sensor.topic("current_temp/pepeunit");
    publish_values(&mut mqtt, &topic, &["950"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        let channels = gql(
            &fx,
            &fx.token,
            "{ alertChannels { uuid paused pausedReason } }",
            json!({}),
        )
        .await;
        let channel = channels["alertChannels"][0].clone();
        if channel["paused"] == json!(true) {
            break channel;
        }
        assert!(Instant::now() < deadline, "never paused: {channels}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        channel["pausedReason"]
            .as_str()
            .unwrap()
            .contains("blocked"),
        "{channel}"
    );
    // A later alert waits behind the paused one.
    publish_values(&mut mqtt, &topic, &["850"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = gql(&fx, &fx.token, "{ alerts { kind } }", json!({})).await;
        if history["alerts"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no second alert: {history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(about(&stub, 9501, "Kiln").is_empty());

    let resumed = gql(
        &fx,
        &fx.token,
        "mutation($u: ID!) { resumeAlertChannel(uuid: $u) { paused pausedReason failures } }",
        json!({ "u": channel["uuid"] }),
    )
    .await;
    assert_eq!(
        resumed["resumeAlertChannel"],
        json!({ "paused": false, "pausedReason": null, "failures": 0 })
    );
    stub.wait_for(9501, 0, |t| t.contains("back to normal"))
        .await;
    let alerts = about(&stub, 9501, "Kiln");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts[0].contains("950 is above 900"), "{}", alerts[0]);
    assert!(alerts[1].contains("850 is back to normal"), "{}", alerts[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_every_value_of_its_chosen_variables_signed_and_in_order() {
    let fx = Fixture::new(|_| {}).await;
    let hook = receiver().await;
    let created = gql(
        &fx,
        &fx.token,
        "mutation($u: String!) { createWebhookChannel(url: $u) { secret channel { uuid } } }",
        json!({ "u": hook.url }),
    )
    .await;
    let secret = created["createWebhookChannel"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let channel = created["createWebhookChannel"]["channel"]["uuid"].clone();
    let sensor = device(&fx, "Orchard").await;
    let node = sensor.node("current_temp/pepeunit");
    let set = "mutation($c: ID!, $n: [ID!]!) { setWebhookVariables(uuid: $c, nodeUuids: $n) { valueNodeUuids } }";
    let chosen = gql(&fx, &fx.token, set, json!({ "c": channel, "n": [node] })).await;
    assert_eq!(
        chosen["setWebhookVariables"]["valueNodeUuids"],
        json!([node])
    );

    // Refused: a variable nobody knows, and more than 50.
    let (_, body) = fx
        .server
        .gql(
            set,
            json!({ "c": channel, "n": [uuid::Uuid::new_v4().to_string()] }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(common::code(&body), "NOT_FOUND", "{body}");
    let many: Vec<String> = (0..51).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let (_, body) = fx
        .server
        .gql(set, json!({ "c": channel, "n": many }), Some(&fx.token))
        .await;
    assert_eq!(common::code(&body), "VALIDATION", "{body}");

    let mut mqtt = sensor.connect(&fx).await;
    let sent: Vec<String> = (1..=12).map(|i| format!("{}.5", 10 + i)).collect();
    let refs: Vec<&str> = sent.iter().map(String::as_str).collect();
    publish_values(&mut mqtt, &sensor.topic("current_temp/pepeunit"), &refs).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = hook.got.lock().unwrap().clone();
        let count: usize = got
            .iter()
            .map(|(_, body)| {
                serde_json::from_str::<Value>(body).unwrap()["values"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();
        if count >= sent.len() {
            break got;
        }
        assert!(Instant::now() < deadline, "the webhook got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut received = Vec::new();
    for (headers, body) in &got {
        let signature = headers["x-pepeunit-signature"].to_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        assert_eq!(
            signature,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            "signature over the exact body"
        );
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["event"], "values");
        assert_eq!(json["dropped"], 0);
        for value in json["values"].as_array().unwrap() {
            assert_eq!(value["unit"]["name"], "Orchard");
            assert_eq!(value["variable"], "current_temp");
            assert_eq!(value["node"], node);
            received.push(value["value"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, sent, "every value, once, in order");
    // The counter moves once the receiver has answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let channels = gql(
            &fx,
            &fx.token,
            "{ alertChannels { valuesSent valuesDropped } }",
            json!({}),
        )
        .await;
        if channels["alertChannels"] == json!([{ "valuesSent": 12, "valuesDropped": 0 }]) {
            break;
        }
        assert!(Instant::now() < deadline, "{channels}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

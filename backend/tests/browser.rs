//! The web app in headless Chromium against a real server: register, mirror a local git repository,
//! see the banner saying the default MQTT port was taken (the test holds it) and dismiss it,
//! create two units, link an output to an input by dragging, see a value a real MQTT client publishes
//! appear on the node, delete the link, see an output's value chart (samples posted over REST, drawn from
//! the server's `series`) and zoom into it by dragging, find the unit's Grafana dashboard, start a rollout
//! of the repository, change the password and log in with the new one, then as the admin close registration, block that user and delete them.
//! A second test opens GraphiQL with the network off the machine blocked and runs a query; a third uses
//! the alert panels (rules, channels, boards, history) while a unit crosses a threshold; a fourth runs
//! federation between two instances in the web app (peering, a remote output linked, its mirror node, a
//! per-unit block). Screenshots go to `$CARGO_TARGET_DIR/e2e-screenshots`.
//!
//! Needs Chromium (`apt-get install chromium`), Node.js with npm and `npm ci` in `frontend/e2e`; the app
//! itself is built here when it is out of date (`pepeunit-frontend-build`). `.ci/run` installs all of it.
//! A missing piece fails the test with what to install: it never passes without a browser.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::git::{GitHttpServer, SourceRepo};
use common::telegram::{TOKEN, TelegramStub};
use common::units::{Fixture, device};
use common::{PASSWORD, TestServer};
use hmac::{Hmac, Mac};
use pepeunit_backend::config::Secret;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "no Chromium at {} (set CHROMIUM, or `apt-get install chromium`; .ci/run does)",
        path.display()
    );
    path
}

fn node_ready(e2e: &Path) {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is missing: `apt-get install nodejs npm` (.ci/run does)"
    );
    assert!(
        e2e.join("node_modules/playwright-core").is_dir() && e2e.join("node_modules/mqtt").is_dir(),
        "the browser test's npm packages are missing: `npm ci --prefix frontend/e2e` (.ci/run does)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_editor_in_a_real_browser() {
    let e2e = workspace().join("frontend/e2e");
    let browser = chromium();
    node_ready(&e2e);
    let paths = pepeunit_frontend_build::Paths::detect();
    let report = tokio::task::spawn_blocking(move || {
        pepeunit_frontend_build::build(&paths, &mut |line| eprintln!("{line}"))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("building the web app failed: {e}"));
    eprintln!("{}", report.summary());

    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "firmware");
    source.publish();
    let git = GitHttpServer::start(remotes.path(), None, Duration::ZERO).await;
    let dist = report.dist.clone();
    // The "default" MQTT port is held by another socket, as Mosquitto holds 1883 on many machines: the
    // server falls back to a free port and the app must say so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let default = taken.local_addr().unwrap();
    let server = TestServer::start_with(|c| {
        c.allow_local_remotes = true;
        c.frontend_dir = dist;
        c.mqtt_bind = default;
        c.mqtt_bind_explicit = false;
    })
    .await;
    assert_ne!(server.mqtt.port(), default.port());
    // The instance's admin, as `pepeunit admin create` makes it: the script logs in as it at the end.
    server.admin("root").await;
    let out = paths_out();
    let _ = std::fs::remove_dir_all(&out);

    let run = tokio::process::Command::new("node")
        .arg(e2e.join("graph.mjs"))
        .current_dir(&e2e)
        .env("PEPEUNIT_URL", &server.base)
        .env("PEPEUNIT_REPO_URL", git.url("firmware"))
        .env("PEPEUNIT_MQTT_URL", format!("mqtt://{}", server.mqtt))
        .env("PEPEUNIT_MQTT_PORT_TAKEN", default.port().to_string())
        .env("PEPEUNIT_E2E_OUT", &out)
        .env("PEPEUNIT_ADMIN", format!("root:{PASSWORD}"))
        .env("CHROMIUM", &browser)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finishes within 4 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("{stdout}");
    drop(taken);
    for shot in [
        "mqtt-port-notice.png",
        "graph.png",
        "form-repo-unit.png",
        "form-validation.png",
        "form-rollout.png",
        "form-admin.png",
        "chart.png",
        "chart-zoomed.png",
    ] {
        assert!(
            out.join(shot).is_file(),
            "no screenshot {shot} in {}",
            out.display()
        );
    }
}

/// GraphiQL comes entirely from the server: with every request off the machine blocked, it loads (under
/// the page's strict CSP, whose violations would be console errors) and answers a query.
#[tokio::test(flavor = "multi_thread")]
async fn graphiql_works_offline() {
    let e2e = workspace().join("frontend/e2e");
    let browser = chromium();
    node_ready(&e2e);
    let server = TestServer::start().await;
    let run = tokio::process::Command::new("node")
        .arg(e2e.join("graphiql.mjs"))
        .current_dir(&e2e)
        .env("PEPEUNIT_URL", &server.base)
        .env("PEPEUNIT_E2E_OUT", paths_out())
        .env("CHROMIUM", &browser)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the GraphiQL test finishes within 3 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "GraphiQL test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("{stdout}");
}

/// Where the screenshots go: beside the build, so CI keeps them with its other outputs.
fn paths_out() -> PathBuf {
    pepeunit_frontend_build::Paths::detect()
        .work
        .parent()
        .map(|target| target.join("e2e-screenshots"))
        .unwrap()
}

/// The web app as it is when this test runs (built here when out of date); its `dist` directory.
async fn built_app() -> PathBuf {
    let paths = pepeunit_frontend_build::Paths::detect();
    let report = tokio::task::spawn_blocking(move || {
        pepeunit_frontend_build::build(&paths, &mut |line| eprintln!("{line}"))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("building the web app failed: {e}"));
    eprintln!("{}", report.summary());
    report.dist
}

/// What a webhook receiver on loopback got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

async fn webhook_receiver() -> (String, Received) {
    let got: Received = Arc::default();
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
    (url, got)
}

/// The Telegram chat the test links from the web app.
const CHAT: i64 = 7001;

/// The alert panels in Chromium (`frontend/e2e/alerts.mjs`): alice sets a threshold rule on her unit's
/// output (mutes and unmutes it) and an offline rule on the unit, links a Telegram chat with the code the
/// app shows (the test sends `/start <code>` to the bot through the Telegram stub), adds a webhook and
/// sees its secret once, composes a board of an input button and an output and deletes another, then
/// the unit publishes over MQTT across the threshold and back and the history shows both alerts. The
/// chat and the webhook (signed with the secret the app showed) get them too.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_in_a_real_browser() {
    let e2e = workspace().join("frontend/e2e");
    let browser = chromium();
    node_ready(&e2e);
    let dist = built_app().await;
    let stub = TelegramStub::start().await;
    let (hook_url, hooks) = webhook_receiver().await;
    let api = stub.url.clone();
    let fx = Fixture::with_config(
        |_| {},
        move |c| {
            c.frontend_dir = dist;
            c.telegram_bot_token = Some(Secret::new(TOKEN));
            c.telegram_api_url = Some(api);
        },
    )
    .await;
    let sensor = device(&fx, "Greenhouse").await;
    // Beside the graph test's screenshots, not among them: that test clears its directory.
    let out = paths_out().with_file_name("e2e-screenshots-alerts");
    let _ = std::fs::remove_dir_all(&out);

    let mut child = tokio::process::Command::new("node")
        .arg(e2e.join("alerts.mjs"))
        .current_dir(&e2e)
        .env("PEPEUNIT_URL", &fx.server.base)
        .env("PEPEUNIT_LOGIN", format!("alice:{PASSWORD}"))
        .env("PEPEUNIT_MQTT_URL", format!("mqtt://{}", fx.server.mqtt))
        .env("PEPEUNIT_UNIT", &sensor.uuid)
        .env("PEPEUNIT_UNIT_TOKEN", &sensor.token)
        .env("PEPEUNIT_OUTPUT", sensor.node("current_temp/pepeunit"))
        .env(
            "PEPEUNIT_OUTPUT_TOPIC",
            sensor.topic("current_temp/pepeunit"),
        )
        .env("PEPEUNIT_INPUT", sensor.node("set_fan_state/pepeunit"))
        .env("PEPEUNIT_WEBHOOK_URL", &hook_url)
        .env("PEPEUNIT_E2E_OUT", &out)
        .env("CHROMIUM", &browser)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    // The script prints what the app showed; the test plays the Telegram user with the command.
    let stdout = child.stdout.take().unwrap();
    let talk = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = String::new();
        let mut secret = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(command) = line.strip_prefix("telegram command: ") {
                let reply = stub.ask(CHAT, command).await;
                assert!(
                    reply.starts_with("Linked to"),
                    "{reply}\n--- stdout\n{seen}"
                );
            }
            if let Some(key) = line.strip_prefix("webhook secret: ") {
                secret = Some(key.to_owned());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        (seen, secret)
    };
    let ((stdout, secret), status) = tokio::time::timeout(Duration::from_secs(300), async {
        let talked = talk.await;
        (talked, child.wait().await.expect("node runs"))
    })
    .await
    .expect("the browser test finishes within 5 minutes");
    let stderr = stderr.await.unwrap();
    assert!(
        status.success(),
        "browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("{stdout}");

    // The chat the app linked got the alert and its return, with the unit, variable and value.
    let fired = stub
        .wait_for(CHAT, 0, |t| {
            t.contains("Greenhouse: current_temp = 31.5 is above 30")
        })
        .await;
    assert!(fired.ends_with(" UTC"), "{fired}");
    stub.wait_for(CHAT, 0, |t| {
        t.contains("Greenhouse: current_temp = 27.5 is back to normal")
    })
    .await;

    // So did the webhook, signed with the secret the app showed once.
    let secret = secret.expect("the script printed the webhook secret the app showed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while hooks.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook got {:?}",
            hooks.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = hooks.lock().unwrap().clone();
    let mut kinds = Vec::new();
    for (headers, body) in &got {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        assert_eq!(
            headers["x-pepeunit-signature"].to_str().unwrap(),
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        kinds.push((
            json["kind"].as_str().unwrap().to_owned(),
            json["value"].clone(),
        ));
    }
    assert_eq!(
        kinds,
        [
            ("fired".to_owned(), serde_json::json!("31.5")),
            ("resolved".to_owned(), serde_json::json!("27.5"))
        ]
    );
    for shot in [
        "alert-rules.png",
        "alert-channels.png",
        "boards.png",
        "alert-history.png",
    ] {
        assert!(
            out.join(shot).is_file(),
            "no screenshot {shot} in {}",
            out.display()
        );
    }
}

/// One instance for the federation test: the fixture (alice and a repo_unit), federation on, an admin
/// `root`, the app served from `dist`, named `localhost:<port>` (ActivityPub ids need a host name).
async fn federated_instance(dist: PathBuf) -> common::units::Fixture {
    let fx = common::units::Fixture::with_config(
        |_| {},
        move |c| {
            c.public_url = c.public_url.replace("127.0.0.1", "localhost");
            c.frontend_dir = dist;
        },
    )
    .await;
    let (_, admin) = fx.server.admin("root").await;
    let (_, body) = fx
        .server
        .gql(
            "mutation { updateInstanceSettings(input: { federationEnabled: true }) { federationEnabled } }",
            serde_json::json!({}),
            Some(&admin),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    fx
}

fn domain_of(fx: &common::units::Fixture) -> String {
    fx.server.base.replace("http://127.0.0.1", "localhost")
}

/// Federation in the web app with two real instances: A's admin asks B to peer and B's admin accepts,
/// each in the Federation panel; alice on A previews a unit of B, links its output into her unit's input and sees
/// the mirror node; alice on B blocks A from that unit on its panel and A's canvas shows the mirror
/// unavailable (frontend/e2e/federation.mjs). Screenshots go to `e2e-screenshots-federation`.
#[tokio::test(flavor = "multi_thread")]
async fn federation_in_a_real_browser() {
    use rumqttc::QoS;
    use serde_json::json;

    let e2e = workspace().join("frontend/e2e");
    let browser = chromium();
    node_ready(&e2e);
    let dist = built_app().await;
    let a = federated_instance(dist.clone()).await;
    let b = federated_instance(dist).await;
    let (a_domain, b_domain) = (domain_of(&a), domain_of(&b));

    // A unit on B with a value on its output; alice's unit on A to link it into.
    let greenhouse = common::units::device(&b, "greenhouse").await;
    let mqtt = greenhouse.connect(&b).await;
    mqtt.publish(
        &greenhouse.topic("current_temp/pepeunit"),
        "21.5",
        QoS::AtLeastOnce,
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let unit = b.unit(&b.token, &greenhouse.uuid).await;
        if common::units::node(&unit, "current_temp/pepeunit")["lastValue"] == "21.5" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "B never stored the value"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::units::device(&a, "display").await;

    // Its own folder: the graph test empties `e2e-screenshots` when it starts.
    let out = paths_out().with_file_name("e2e-screenshots-federation");
    let run = tokio::process::Command::new("node")
        .arg(e2e.join("federation.mjs"))
        .current_dir(&e2e)
        .env("PEPEUNIT_A_URL", format!("http://{a_domain}"))
        .env("PEPEUNIT_B_URL", format!("http://{b_domain}"))
        .env("PEPEUNIT_A_DOMAIN", &a_domain)
        .env("PEPEUNIT_B_DOMAIN", &b_domain)
        .env("PEPEUNIT_ADMIN", format!("root:{PASSWORD}"))
        .env("PEPEUNIT_USER", format!("alice:{PASSWORD}"))
        .env("PEPEUNIT_REMOTE", format!("{}@{b_domain}", greenhouse.uuid))
        .env("PEPEUNIT_VALUE", "21.5")
        .env("PEPEUNIT_E2E_OUT", &out)
        .env("CHROMIUM", &browser)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the federation browser test finishes within 5 minutes")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "federation browser test failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("{stdout}");
    drop(mqtt);

    // What the user did in the browser holds in the API: B blocks A from the greenhouse, and A's
    // follow of it is gone.
    let (_, body) = b
        .server
        .gql(
            "query($u: ID!) { unitBlockedInstances(unitUuid: $u) { domain } }",
            json!({ "u": greenhouse.uuid }),
            Some(&b.token),
        )
        .await;
    assert_eq!(
        body["data"]["unitBlockedInstances"],
        json!([{ "domain": a_domain }]),
        "{body}"
    );
    let (_, body) = a
        .server
        .gql(
            "{ remoteUnits { status links { uuid } } }",
            json!({}),
            Some(&a.token),
        )
        .await;
    assert_eq!(body["data"]["remoteUnits"][0]["status"], "gone", "{body}");
    for shot in [
        "federation-panel.png",
        "remote-unit-preview.png",
        "mirror-node.png",
        "unit-blocks.png",
        "mirror-unavailable.png",
    ] {
        assert!(
            out.join(shot).is_file(),
            "no screenshot {shot} in {}",
            out.display()
        );
    }
}

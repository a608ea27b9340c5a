//! The published client framework (`pepeunit-client[all]==1.3.0` from PyPI) against this server: with the
//! env.json and schema.json the server generated, its REST client downloads env, schema and the update
//! archive (and unpacks it as a device does), and uses state storage and the link look-ups.
//!
//! The virtualenv is cached (`PEPEUNIT_PYCLIENT_VENV`, default `~/.cache/pepeunit-pyclient-1.3.0`) so
//! reruns do not reinstall; a machine without PyPI fails this test loudly rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::units::{Fixture, node};
use serde_json::{Value, json};

const CLIENT: &str = "pepeunit-client[all]==1.3.0";

const SCRIPT: &str = r#"
import json, os, sys
from pepeunit_client import PepeunitClient, RestartMode

unit_dir, out_dir, output_topic = sys.argv[1], sys.argv[2], sys.argv[3]
client = PepeunitClient(
    env_file_path=os.path.join(unit_dir, 'env.json'),
    schema_file_path=os.path.join(unit_dir, 'schema.json'),
    log_file_path=os.path.join(unit_dir, 'log.json'),
    enable_mqtt=False,
    enable_rest=True,
    restart_mode=RestartMode.NO_RESTART,
    ff_console_log_enable=False,
)
rest = client.rest_client
result = {'unit_uuid': client.settings.unit_uuid}
rest.download_env(os.path.join(out_dir, 'env.json'))
rest.download_schema(os.path.join(out_dir, 'schema.json'))
archive = os.path.join(out_dir, 'update.tar.gz')
rest.download_update(archive)
client.update_device_program(archive)
client.set_state_storage('{"boots": 7}')
result['state'] = client.get_state_storage()
result['inputs'] = rest.get_input_by_output(output_topic)
result['units'] = rest.get_units_by_nodes([output_topic.split('/')[1]])
print(json.dumps(result))
"#;

/// A virtualenv with the reference client, installed once.
fn venv() -> PathBuf {
    common::python::venv(
        "PEPEUNIT_PYCLIENT_VENV",
        "pepeunit-pyclient-1.3.0",
        &[CLIENT],
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_reference_client_talks_to_this_server() {
    let python = venv().join("bin/python");
    let fx = Fixture::new(|source| {
        source.write("lib/sensor.py", "def read(): return 21\n");
        source.write("examples/demo.py", "demo");
        source.commit("firmware with a library");
    })
    .await;
    let unit = fx
        .create_unit(&fx.token, json!({ "name": "Python unit" }))
        .await;
    let uuid = unit["uuid"].as_str().unwrap();
    let listener = fx
        .create_unit(&fx.token, json!({ "name": "Listener" }))
        .await;
    let output = node(&unit, "current_temp/pepeunit");
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": output["uuid"], "i": node(&listener, "set_fan_state/pepeunit")["uuid"] }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    // The device as flashed: env.json and schema.json from the server, nothing else.
    let env = fx.env(&fx.token, uuid).await;
    let token = env["PU_AUTH_TOKEN"].as_str().unwrap().to_owned();
    let schema = fx
        .device_json(&format!("/units/get_current_schema/{uuid}"), &token)
        .await;
    let device = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    std::fs::write(device.path().join("env.json"), env.to_string()).unwrap();
    std::fs::write(device.path().join("schema.json"), schema.to_string()).unwrap();
    let script = device.path().join("check.py");
    std::fs::write(&script, SCRIPT).unwrap();

    let stdout = tokio::task::spawn_blocking({
        let (device, downloads) = (device.path().to_owned(), downloads.path().to_owned());
        let topic = output["topic"].as_str().unwrap().to_owned();
        move || {
            common::python::run(
                Command::new(python)
                    .arg(script)
                    .arg(device)
                    .arg(downloads)
                    .arg(topic),
            )
        }
    })
    .await
    .unwrap();
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}"));

    assert_eq!(
        result["unit_uuid"], uuid,
        "the client reads the uuid from the token"
    );
    assert_eq!(read_json(&downloads.path().join("env.json")), env);
    assert_eq!(read_json(&downloads.path().join("schema.json")), schema);
    // The update archive unpacked over the device directory, as on a device.
    let unpacked = |p: &str| device.path().join(p);
    assert_eq!(
        std::fs::read_to_string(unpacked("lib/sensor.py")).unwrap(),
        "def read(): return 21\n"
    );
    assert!(unpacked("main.py").is_file());
    assert!(!unpacked("examples").exists() && !unpacked(".git").exists());
    assert_eq!(read_json(&unpacked("env.json")), env);
    // State storage: the client hands back the raw body, a JSON string; the server holds the text.
    assert_eq!(result["state"], json!("{\"boots\": 7}").to_string());
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { stateStorage } }",
            json!({ "u": uuid }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["unit"]["stateStorage"], "{\"boots\": 7}");
    // Look-ups: the listener's input is fed by this output; the output's unit is this unit.
    assert_eq!(result["inputs"]["count"], 1, "{result}");
    assert_eq!(
        result["inputs"]["unit_nodes"][0]["uuid"],
        node(&listener, "set_fan_state/pepeunit")["uuid"]
    );
    assert_eq!(result["units"]["count"], 1, "{result}");
    assert_eq!(result["units"]["units"][0]["uuid"], uuid);
    assert_eq!(
        result["units"]["units"][0]["unit_nodes"][0]["uuid"],
        output["uuid"]
    );
}

/// A unit program written for the reference client: echoes its input to its output, logs its version.
const PROGRAM: &str = r#"import os
import time
from pepeunit_client import PepeunitClient, RestartMode

VERSION = "__VERSION__"
here = os.path.dirname(os.path.abspath(__file__))
client = PepeunitClient(
    env_file_path=os.path.join(here, 'env.json'),
    schema_file_path=os.path.join(here, 'schema.json'),
    log_file_path=os.path.join(here, 'log.json'),
    enable_mqtt=True,
    enable_rest=True,
    restart_mode=RestartMode.RESTART_EXEC,
    cycle_speed=0.05,
)

def on_input(client, msg):
    if msg.topic in client.schema.input_topic.get('set_fan_state/pepeunit', []):
        client.publish_to_topics('current_temp/pepeunit', 'echo:' + msg.payload)

client.set_mqtt_input_handler(on_input)
client.mqtt_client.connect()
time.sleep(1)
client.logger.info('started ' + VERSION)
client.run_main_cycle()
"#;

async fn wait_for(
    fx: &Fixture,
    what: &str,
    query: &str,
    vars: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..300 {
        let (_, body) = fx.server.gql(query, vars.clone(), Some(&fx.token)).await;
        if done(&body) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn logs_contain(body: &Value, text: &str) -> bool {
    body["data"]["unit"]["logs"]["items"]
        .as_array()
        .is_some_and(|items| {
            items
                .iter()
                .any(|i| i["text"].as_str().is_some_and(|t| t.contains(text)))
        })
}

#[tokio::test]
async fn a_reference_client_program_runs_talks_and_updates_itself() {
    use std::io::Read;
    let python = venv().join("bin/python");
    let fx = Fixture::new(|source| {
        source.write("main.py", PROGRAM.replace("__VERSION__", "v1"));
        source.commit("program v1");
    })
    .await;
    let unit = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Python fan", "env": { "PU_STATE_SEND_INTERVAL": 1 } }),
        )
        .await;
    let uuid = unit["uuid"].as_str().unwrap().to_owned();
    let sensor = fx.create_unit(&fx.token, json!({ "name": "Sensor" })).await;
    let sensor_uuid = sensor["uuid"].as_str().unwrap().to_owned();
    let link = "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }";
    fx.server
        .gql(link, json!({ "o": node(&sensor, "current_temp/pepeunit")["uuid"], "i": node(&unit, "set_fan_state/pepeunit")["uuid"] }), Some(&fx.token))
        .await;

    // Flash: the device archive as the device API serves it, unpacked into the device's directory.
    let token = fx.unit_token(&uuid).await;
    let archive = fx
        .device_get(
            &format!("/units/firmware/tgz/{uuid}?wbits=9&level=9"),
            Some(&token),
        )
        .await
        .bytes()
        .await
        .unwrap();
    let mut tar = Vec::new();
    flate2::read::ZlibDecoder::new(&archive[..])
        .read_to_end(&mut tar)
        .unwrap();
    let device = tempfile::tempdir().unwrap();
    tar::Archive::new(&tar[..]).unpack(device.path()).unwrap();
    let output = std::fs::File::create(device.path().join("program.out")).unwrap();
    let program = Command::new(&python)
        .arg("main.py")
        .current_dir(device.path())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _program = Kill(program);

    let v1 = common::git::git(&fx.source.work, &["rev-parse", "HEAD"]);
    let unit_query = "query($u: ID!) { unit(uuid: $u) { online reportedCommit updateStatus logs(limit: 500) { items { text } } nodes { topicName lastValue } } }";
    let vars = json!({ "u": uuid });
    wait_for(
        &fx,
        "state with v1 and the start log",
        unit_query,
        vars.clone(),
        |b| b["data"]["unit"]["reportedCommit"] == v1.as_str() && logs_contain(b, "started v1"),
    )
    .await;

    // An input from a linked unit reaches the program; its output reaches the server.
    let sensor_token = fx.unit_token(&sensor_uuid).await;
    let sensor_mqtt = common::mqtt::connect(&fx.server, &sensor_uuid, &sensor_token)
        .await
        .unwrap();
    sensor_mqtt
        .publish(
            node(&sensor, "current_temp/pepeunit")["topic"]
                .as_str()
                .unwrap(),
            "42",
            rumqttc::QoS::AtLeastOnce,
        )
        .await;
    wait_for(&fx, "the echoed output", unit_query, vars.clone(), |b| {
        b["data"]["unit"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["lastValue"] == "echo:42")
    })
    .await;

    // env_update, schema_update and log_sync are handled.
    fx.server
        .gql(
            "mutation($u: ID!) { setUnitEnv(uuid: $u, env: {WIFI_SSID: \"new\"}) }",
            vars.clone(),
            Some(&fx.token),
        )
        .await;
    wait_for(&fx, "the env update", unit_query, vars.clone(), |b| {
        logs_contain(b, "Success update env")
    })
    .await;
    assert_eq!(
        read_json(&device.path().join("env.json"))["WIFI_SSID"],
        "new"
    );
    fx.server
        .gql(link, json!({ "o": node(&sensor, "current_temp/pepeunit")["uuid"], "i": node(&sensor, "set_fan_state/pepeunit")["uuid"] }), Some(&fx.token))
        .await;
    let listener = fx
        .create_unit(&fx.token, json!({ "name": "Listener" }))
        .await;
    fx.server
        .gql(link, json!({ "o": node(&listener, "current_temp/pepeunit")["uuid"], "i": node(&unit, "set_fan_state/pepeunit")["uuid"] }), Some(&fx.token))
        .await;
    wait_for(&fx, "the schema update", unit_query, vars.clone(), |b| {
        logs_contain(b, "Success update schema")
    })
    .await;
    assert_eq!(
        read_json(&device.path().join("schema.json"))["input_topic"]["set_fan_state/pepeunit"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    fx.server
        .gql(
            "mutation($u: ID!) { requestLogSync(uuid: $u) }",
            vars.clone(),
            Some(&fx.token),
        )
        .await;
    // The client answers log_sync by republishing its whole log, then logs "Log sync completed"; a
    // connection's publishes are stored in order, so once that line is in, the republished log is too.
    let synced = wait_for(&fx, "the log sync", unit_query, vars.clone(), |b| {
        logs_contain(b, "Log sync completed")
    })
    .await;
    let count = |body: &Value, text: &str| {
        body["data"]["unit"]["logs"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["text"].as_str() == Some(text))
            .count()
    };
    assert_eq!(
        count(&synced, "started v1"),
        1,
        "a line the client republishes on log_sync is stored once: {synced}"
    );

    // The update: a new commit on the branch; the program downloads it and restarts into it.
    fx.source
        .write("main.py", PROGRAM.replace("__VERSION__", "v2"));
    let v2 = fx.source.commit("program v2");
    fx.push_and_sync().await;
    let done = wait_for(&fx, "the update to v2", unit_query, vars.clone(), |b| {
        b["data"]["unit"]["updateStatus"] == "done" && logs_contain(b, "started v2")
    })
    .await;
    assert_eq!(done["data"]["unit"]["reportedCommit"], v2);
    assert!(
        std::fs::read_to_string(device.path().join("main.py"))
            .unwrap()
            .contains("VERSION = \"v2\"")
    );

    // A new token disconnects the device; clearing its retained update command on the way must not
    // reach it as an (empty) update command, which the client would act on with its revoked token.
    let update_commands = || {
        std::fs::read_to_string(device.path().join("log.json"))
            .unwrap_or_default()
            .matches("Get base MQTT command: update/pepeunit")
            .count()
    };
    let before = update_commands();
    let (_, body) = fx
        .server
        .gql(
            "mutation($u: ID!) { regenerateUnitToken(uuid: $u) }",
            vars.clone(),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    wait_for(
        &fx,
        "the device to be disconnected",
        unit_query,
        vars.clone(),
        |b| b["data"]["unit"]["online"] == false,
    )
    .await;
    // The client handles messages on its network thread: give one that was delivered time to be logged.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        update_commands(),
        before,
        "no update command after the token changed: {}",
        std::fs::read_to_string(device.path().join("log.json")).unwrap_or_default()
    );
}

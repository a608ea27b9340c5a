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

fn run(command: &mut Command) -> String {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A virtualenv with the reference client, installed once.
fn venv() -> PathBuf {
    let dir = std::env::var_os("PEPEUNIT_PYCLIENT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/pepeunit-pyclient-1.3.0")
        });
    let marker = dir.join("installed");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        run(Command::new(dir.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            CLIENT,
        ]));
        std::fs::write(&marker, CLIENT).unwrap();
    }
    dir
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
            run(Command::new(python)
                .arg(script)
                .arg(device)
                .arg(downloads)
                .arg(topic))
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

//! The agent's guide documents every setting and every crash point the tests exercise.
#![allow(clippy::unwrap_used)]

use clap::{Args, Command};
use pepeunit_unit_runtime::agent::RunArgs;

fn guide() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/unit-runtime.md"),
    )
    .unwrap()
}

#[test]
fn every_agent_setting_is_documented() {
    let guide = guide();
    let command = RunArgs::augment_args(Command::new("run"));
    let mut checked = 0;
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        assert!(
            guide.contains(&format!("`{env}`")),
            "docs/src/unit-runtime.md does not document {env}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} settings found");
}

#[test]
fn every_update_step_is_documented() {
    let guide = guide();
    for step in pepeunit_unit_runtime::failpoint::UPDATE_STEPS {
        assert!(guide.contains(&format!("`{step}`")), "{step}");
    }
}

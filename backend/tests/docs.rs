//! The configuration reference in docs/ names every setting the binary accepts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{Args, Command};
use pepeunit_backend::config::ConfigArgs;

#[test]
fn every_setting_is_documented() {
    let reference = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/configuration.md"),
    )
    .unwrap();
    let command = ConfigArgs::augment_args(Command::new("pepeunit"));
    let mut checked = 0;
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        assert!(
            reference.contains(&format!("`{env}`")),
            "docs/src/configuration.md does not document {env}"
        );
        checked += 1;
    }
    assert!(checked >= 17, "only {checked} settings found");
}

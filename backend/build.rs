//! Builds the web app with release builds of the server, so `cargo run --release` serves an up-to-date
//! app at `/`. Debug builds (tests, clippy) only learn where the app goes; the browser test and CI build it
//! themselves with `cargo run -p pepeunit-frontend-build`. `PEPEUNIT_SKIP_FRONTEND=1` skips the build
//! (e.g. an image that copies a prebuilt app); `PEPEUNIT_BUILD_FRONTEND=1` builds it in debug builds too
//! (CI uses it to check that a second build compiles nothing).
//!
//! Progress goes to the terminal (`/dev/tty`) as it happens: cargo shows a build script's `cargo:warning`
//! lines only when it ends (and replays them on every later build), and its stderr only with `-vv` or on
//! failure, where the same lines are too.

use std::io::Write as _;

fn main() {
    let paths = pepeunit_frontend_build::Paths::detect();
    println!(
        "cargo:rustc-env=PEPEUNIT_FRONTEND_DIST={}",
        paths.dist().display()
    );
    println!("cargo:rerun-if-env-changed=PEPEUNIT_SKIP_FRONTEND");
    println!("cargo:rerun-if-env-changed=PEPEUNIT_BUILD_FRONTEND");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if !(release || set("PEPEUNIT_BUILD_FRONTEND")) || set("PEPEUNIT_SKIP_FRONTEND") {
        return;
    }
    for input in paths.inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let mut tty = std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/tty")
        .ok();
    let mut log = |line: &str| {
        eprintln!("{line}");
        if let Some(tty) = tty.as_mut() {
            // Over cargo's progress bar, in cargo's own style.
            let _ = writeln!(tty, "\r\x1b[K  pepeunit-backend(build): {line}");
        }
    };
    match pepeunit_frontend_build::build(&paths, &mut log) {
        Ok(report) => log(&report.summary()),
        Err(error) => {
            eprintln!(
                "{error}\n\nbuilding the web app failed; fix it, or set PEPEUNIT_SKIP_FRONTEND=1 to build the server alone"
            );
            std::process::exit(1);
        }
    }
}

//! Builds the web app with release builds of the server, so `cargo run --release` serves an up-to-date
//! app at `/`. Debug builds (tests, clippy) only learn where the app goes; the browser test and CI build it
//! themselves with `cargo run -p pepeunit-frontend-build`. `PEPEUNIT_SKIP_FRONTEND=1` skips the build
//! (e.g. an image that copies a prebuilt app).

fn main() {
    let paths = pepeunit_frontend_build::Paths::detect();
    println!(
        "cargo:rustc-env=PEPEUNIT_FRONTEND_DIST={}",
        paths.dist().display()
    );
    println!("cargo:rerun-if-env-changed=PEPEUNIT_SKIP_FRONTEND");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let skip = std::env::var("PEPEUNIT_SKIP_FRONTEND").is_ok_and(|v| !v.is_empty() && v != "0");
    if !release || skip {
        return;
    }
    for input in paths.inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    match pepeunit_frontend_build::build(&paths, &mut |line| eprintln!("{line}")) {
        Ok(report) => println!("cargo:warning={}", report.summary()),
        Err(error) => {
            eprintln!(
                "{error}\n\nbuilding the web app failed; fix it, or set PEPEUNIT_SKIP_FRONTEND=1 to build the server alone"
            );
            std::process::exit(1);
        }
    }
}

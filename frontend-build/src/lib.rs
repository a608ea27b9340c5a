//! Builds the web app in `frontend/` into a directory of static files (`index.html`, the JS glue and the
//! wasm) with tools that come from the registries alone: the rustup target, wasm-bindgen's generator as a
//! library (`wasm-bindgen-cli-support`, pinned to the version of `wasm-bindgen` in Cargo.lock), and
//! `wasm-opt` from the npm package `binaryen` (pinned, installed with npm into the build's own directory
//! when npm is there; else a `wasm-opt` on `PATH`; else the wasm ships as rustc wrote it).
//!
//! The backend's build script calls it for release builds, the browser test and CI through the binary.
//! Cargo decides whether the wasm is out of date; the later steps run only when the wasm or the page
//! changed, so a build with nothing to do takes about a second.

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";
const PACKAGE: &str = "pepeunit-frontend";
/// The npm package `binaryen` whose `wasm-opt` parses what current rustc emits (Debian's 108 does not).
const BINARYEN: &str = "132.0.0";
/// The files the server serves, as wasm-bindgen names them after the package.
pub const FILES: [&str; 3] = [
    "index.html",
    "pepeunit-frontend.js",
    "pepeunit-frontend_bg.wasm",
];

/// Where the build reads and writes.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The workspace root (with Cargo.lock and `frontend/`).
    pub workspace: PathBuf,
    /// The build's own directory: the wasm target dir, the installed tools, the result.
    pub work: PathBuf,
}

impl Paths {
    /// The workspace of the calling crate; work under `$CARGO_TARGET_DIR/frontend` (or `target/frontend`).
    ///
    /// Cargo gives build scripts, `cargo run` and tests the package's directory at run time; every
    /// caller is a crate at the workspace's top level. The path compiled in is only the fallback: with
    /// a target directory shared by several checkouts, cargo may reuse this library built from another.
    pub fn detect() -> Self {
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        let workspace = package.parent().map(Path::to_path_buf).unwrap_or_default();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target"));
        let target = if target.is_relative() {
            workspace.join(target)
        } else {
            target
        };
        Self {
            workspace,
            work: target.join("frontend"),
        }
    }

    /// The built app, served by the backend.
    pub fn dist(&self) -> PathBuf {
        self.work.join("dist")
    }

    /// Written last by a successful build: what the app was built from.
    pub fn stamp(&self) -> PathBuf {
        self.dist().join(".stamp")
    }

    /// The inputs whose change makes the app out of date, for `cargo:rerun-if-changed`. Only sources:
    /// a file the build itself writes would be newer than the build script's run, and cargo would run
    /// it (and rebuild the backend) again next time.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let w = &self.workspace;
        vec![
            w.join("frontend/src"),
            w.join("frontend/assets"),
            w.join("frontend/index.html"),
            w.join("frontend/Cargo.toml"),
            w.join("protocol/src"),
            w.join("protocol/Cargo.toml"),
            w.join("Cargo.lock"),
        ]
    }
}

/// What a build did.
#[derive(Clone, Debug)]
pub struct Report {
    pub dist: PathBuf,
    /// False when the app was already up to date.
    pub rebuilt: bool,
    pub seconds: f64,
    pub wasm_bytes: u64,
    /// The size after wasm-bindgen, before wasm-opt; `None` without wasm-opt or when up to date.
    pub unoptimized_bytes: Option<u64>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut line = format!(
            "web app {} in {:.1} s at {} (wasm {} KiB",
            if self.rebuilt { "built" } else { "up to date" },
            self.seconds,
            self.dist.display(),
            self.wasm_bytes / 1024
        );
        if let Some(before) = self.unoptimized_bytes {
            let _ = write!(line, ", {} KiB before wasm-opt", before / 1024);
        }
        line.push(')');
        line
    }
}

/// Runs `command`, passing each line it writes to stderr that `show` picks to `log` as it comes.
fn run_showing(
    command: &mut Command,
    what: &str,
    show: fn(&str) -> bool,
    log: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mut child = command
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", command.get_program()))?;
    let mut output = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if show(&line) {
                log(line.trim());
            }
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}):\n{output}"))
    }
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A cargo for nested builds: what the calling cargo set for its own build must not leak in (its
/// target dir, flags for the host, clippy as the compiler).
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}

fn ensure_target(log: &mut dyn FnMut(&str)) -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            log(&format!(
                "installing the rust target {TARGET} (rustup target add)"
            ));
            run(
                Command::new("rustup").args(["target", "add", TARGET]),
                "rustup target add",
            )
            .map(drop)
        }
        // Without rustup the toolchain must already have the target; cargo will say if it does not.
        Err(_) => Ok(()),
    }
}

/// The version of the package `name` in a Cargo.lock.
pub fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

/// A `wasm-opt` that reads what rustc emits: binaryen from npm, installed once into the build's directory.
fn wasm_opt(paths: &Paths, log: &mut dyn FnMut(&str)) -> Option<Command> {
    let prefix = paths
        .work
        .join("tools")
        .join(format!("binaryen-{BINARYEN}"));
    let script = prefix.join("node_modules/binaryen/bin/wasm-opt");
    let works = |command: &mut Command| {
        command
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let node = || {
        let mut command = Command::new("node");
        command.arg(&script);
        command
    };
    if !script.is_file() && works(&mut Command::new("npm")) {
        log(&format!(
            "installing wasm-opt (npm install binaryen@{BINARYEN}, once)"
        ));
        let installed = run(
            Command::new("npm")
                .args(["install", "--no-save", "--no-audit", "--no-fund"])
                .arg("--prefix")
                .arg(&prefix)
                .arg(format!("binaryen@{BINARYEN}")),
            "npm install binaryen",
        );
        if let Err(error) = installed {
            log(&format!("warning: {error}"));
        }
    }
    if script.is_file() && works(&mut node()) {
        return Some(node());
    }
    works(&mut Command::new("wasm-opt")).then(|| Command::new("wasm-opt"))
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A fingerprint of what the later steps turn into the app.
fn fingerprint(parts: &[&[u8]]) -> String {
    // FNV-1a: only change detection, no adversary.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(b"\0") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Builds the app into [`Paths::dist`] unless it is up to date.
pub fn build(paths: &Paths, log: &mut dyn FnMut(&str)) -> Result<Report, String> {
    let started = Instant::now();
    // Browser tests build the app from parallel processes: one builds, the others wait for it and
    // then find the app up to date instead of replacing `dist` while it is being served.
    std::fs::create_dir_all(&paths.work)
        .map_err(|e| format!("creating {}: {e}", paths.work.display()))?;
    let lock = std::fs::File::create(paths.work.join(".lock"))
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| format!("locking {}: {e}", paths.work.display()))?;
    let report = build_locked(paths, started, log);
    drop(lock);
    report
}

fn build_locked(
    paths: &Paths,
    started: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<Report, String> {
    ensure_target(log)?;
    let wasm_target = paths.work.join("wasm");
    log("building the web app for wasm32 (cargo build --profile wasm-release)");
    run_showing(
        cargo()
            .current_dir(&paths.workspace)
            .args([
                "build",
                "--locked",
                "-p",
                PACKAGE,
                "--profile",
                PROFILE,
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&wasm_target),
        "cargo build of the web app",
        |line| line.trim_start().starts_with("Compiling"),
        log,
    )?;
    let wasm = wasm_target
        .join(TARGET)
        .join(PROFILE)
        .join(format!("{PACKAGE}.wasm"));
    let wasm_bytes =
        std::fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    let page = std::fs::read(paths.workspace.join("frontend/index.html"))
        .map_err(|e| format!("reading frontend/index.html: {e}"))?;
    let wasm_opt = wasm_opt(paths, log);
    let stamp = fingerprint(&[
        &wasm_bytes,
        &page,
        BINARYEN.as_bytes(),
        &[u8::from(wasm_opt.is_some())],
    ]);
    let dist = paths.dist();
    let current = std::fs::read_to_string(paths.stamp()).unwrap_or_default();
    if current == stamp && FILES.iter().all(|f| dist.join(f).is_file()) {
        return Ok(Report {
            dist: dist.clone(),
            rebuilt: false,
            seconds: started.elapsed().as_secs_f64(),
            wasm_bytes: file_size(&dist.join(FILES[2])),
            unoptimized_bytes: None,
        });
    }

    let staging = paths.work.join("dist.new");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    log("generating the JS bindings (wasm-bindgen)");
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen
        .input_path(&wasm)
        .web(true)
        .and_then(|b| b.typescript(false).generate(&staging))
        .map_err(|e| format!("wasm-bindgen: {e:#}"))?;
    let output = staging.join(FILES[2]);
    let mut unoptimized_bytes = None;
    if let Some(mut wasm_opt) = wasm_opt {
        let before = file_size(&output);
        log("shrinking the wasm (wasm-opt -Oz)");
        let optimized = staging.join("optimized.wasm");
        // The features rustc enables by default for wasm32; older binaryen needs them named.
        let result = run(
            wasm_opt
                .args([
                    "-Oz",
                    "--enable-bulk-memory",
                    "--enable-nontrapping-float-to-int",
                    "--enable-sign-ext",
                    "--enable-mutable-globals",
                    "--enable-reference-types",
                    "--enable-multivalue",
                ])
                .arg(&output)
                .arg("-o")
                .arg(&optimized),
            "wasm-opt",
        );
        match result {
            Ok(_) => {
                std::fs::rename(&optimized, &output)
                    .map_err(|e| format!("moving the optimized wasm: {e}"))?;
                unoptimized_bytes = Some(before);
            }
            // An old binaryen on PATH (Debian's 108) cannot read the instructions rustc emits now
            // (`table.fill`); the app then ships as rustc's size-optimized output.
            Err(error) => log(&format!("warning: keeping the wasm unoptimized: {error}")),
        }
    }
    std::fs::write(staging.join("index.html"), &page)
        .map_err(|e| format!("writing index.html: {e}"))?;
    std::fs::write(staging.join(".stamp"), &stamp)
        .map_err(|e| format!("writing the stamp: {e}"))?;
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::rename(&staging, &dist)
        .map_err(|e| format!("moving the app to {}: {e}", dist.display()))?;
    Ok(Report {
        dist: dist.clone(),
        rebuilt: true,
        seconds: started.elapsed().as_secs_f64(),
        wasm_bytes: file_size(&dist.join(FILES[2])),
        unoptimized_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_locked_version() {
        let lock = "[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.1\"\n\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n";
        assert_eq!(
            locked_version(lock, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            locked_version("[[package]]\nname = \"serde\"\n", "wasm-bindgen"),
            None
        );
    }

    /// The generator reads the schema the app's wasm-bindgen wrote: their versions must be the same.
    #[test]
    fn the_generator_matches_the_apps_wasm_bindgen() {
        let lock = std::fs::read_to_string(Paths::detect().workspace.join("Cargo.lock")).unwrap();
        let app = locked_version(&lock, "wasm-bindgen").unwrap();
        let generator = locked_version(&lock, "wasm-bindgen-cli-support").unwrap();
        assert_eq!(
            app, generator,
            "bump wasm-bindgen-cli-support in Cargo.toml"
        );
    }

    /// Nothing the build writes may be among the inputs cargo watches: it would be newer than the build
    /// script's run, and every later `cargo build` would rebuild the backend.
    #[test]
    fn no_output_is_watched() {
        let paths = Paths::detect();
        for input in paths.inputs() {
            assert!(!input.starts_with(&paths.work), "{}", input.display());
        }
    }

    #[test]
    fn fingerprints_change_with_any_part() {
        let a = fingerprint(&[b"wasm", b"page"]);
        assert_eq!(a, fingerprint(&[b"wasm", b"page"]));
        assert_ne!(a, fingerprint(&[b"wasm", b"pagf"]));
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
    }
}

//! Builds the web app in `frontend/` into a directory of static files (`index.html`, the JS glue and the
//! wasm) with tools that come from the registries alone: the rustup target, `wasm-bindgen-cli` at exactly
//! the version in Cargo.lock (installed with `cargo install` into the build's own directory when
//! missing), and `wasm-opt` from binaryen when it is on `PATH`.
//!
//! The backend's build script calls it for release builds, the browser test and CI through the binary.
//! Cargo decides whether the wasm is out of date; the later steps run only when the wasm or the page
//! changed, so a build with nothing to do takes about a second.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "wasm-release";
const PACKAGE: &str = "pepeunit-frontend";
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

    /// Written last by a successful build; its change tells cargo to rerun the backend's build script.
    pub fn stamp(&self) -> PathBuf {
        self.dist().join(".stamp")
    }

    /// The inputs whose change makes the app out of date, for `cargo:rerun-if-changed`.
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
            self.stamp(),
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

/// The wasm-bindgen version Cargo.lock pins; the CLI must match it exactly.
pub fn locked_wasm_bindgen(lock: &str) -> Option<String> {
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_owned());
        }
    }
    None
}

fn ensure_wasm_bindgen(paths: &Paths, log: &mut dyn FnMut(&str)) -> Result<PathBuf, String> {
    let lock = std::fs::read_to_string(paths.workspace.join("Cargo.lock"))
        .map_err(|e| format!("reading Cargo.lock: {e}"))?;
    let version = locked_wasm_bindgen(&lock).ok_or("Cargo.lock has no wasm-bindgen")?;
    let wanted = format!("wasm-bindgen {version}");
    let tools = paths.work.join("tools");
    let local = tools.join("bin").join("wasm-bindgen");
    for candidate in [local.clone(), PathBuf::from("wasm-bindgen")] {
        if let Ok(out) = Command::new(&candidate).arg("--version").output()
            && String::from_utf8_lossy(&out.stdout).trim() == wanted
        {
            return Ok(candidate);
        }
    }
    log(&format!(
        "installing wasm-bindgen-cli {version} (cargo install, a few minutes, once)"
    ));
    // Not `--locked`: one dependency version in the CLI's own lock file is no longer on crates.io.
    run(
        cargo()
            .args([
                "install",
                "wasm-bindgen-cli",
                "--version",
                &version,
                "--root",
            ])
            .arg(&tools)
            .arg("--target-dir")
            .arg(tools.join("build")),
        "cargo install wasm-bindgen-cli",
    )?;
    Ok(local)
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
    ensure_target(log)?;
    let wasm_bindgen = ensure_wasm_bindgen(paths, log)?;
    let wasm_target = paths.work.join("wasm");
    log("building the web app for wasm32 (cargo build --profile wasm-release)");
    run(
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
    )?;
    let wasm = wasm_target
        .join(TARGET)
        .join(PROFILE)
        .join(format!("{PACKAGE}.wasm"));
    let wasm_bytes =
        std::fs::read(&wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    let page = std::fs::read(paths.workspace.join("frontend/index.html"))
        .map_err(|e| format!("reading frontend/index.html: {e}"))?;
    let wasm_opt = Command::new("wasm-opt").arg("--version").output().is_ok();
    let stamp = fingerprint(&[
        &wasm_bytes,
        &page,
        wasm_bindgen.as_os_str().as_encoded_bytes(),
        &[u8::from(wasm_opt)],
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
    run(
        Command::new(&wasm_bindgen)
            .args(["--target", "web", "--no-typescript", "--out-dir"])
            .arg(&staging)
            .arg(&wasm),
        "wasm-bindgen",
    )?;
    let output = staging.join(FILES[2]);
    let mut unoptimized_bytes = None;
    if wasm_opt {
        let before = file_size(&output);
        log("shrinking the wasm (wasm-opt -Oz)");
        let optimized = staging.join("optimized.wasm");
        // The features rustc enables by default for wasm32; older binaryen needs them named.
        let result = run(
            Command::new("wasm-opt")
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
            // Debian bookworm's binaryen (108) cannot read the reference-types instructions rustc and
            // wasm-bindgen emit now; the app then ships as rustc's size-optimized output.
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
    fn reads_the_locked_wasm_bindgen_version() {
        let lock = "[[package]]\nname = \"wasm-bindgen-futures\"\nversion = \"0.4.1\"\n\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.130\"\n";
        assert_eq!(locked_wasm_bindgen(lock).as_deref(), Some("0.2.130"));
        assert_eq!(locked_wasm_bindgen("[[package]]\nname = \"serde\"\n"), None);
    }

    #[test]
    fn fingerprints_change_with_any_part() {
        let a = fingerprint(&[b"wasm", b"page"]);
        assert_eq!(a, fingerprint(&[b"wasm", b"page"]));
        assert_ne!(a, fingerprint(&[b"wasm", b"pagf"]));
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
    }
}

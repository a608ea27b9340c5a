//! Entry point of the web app; on the host it only says how to build it.

#[cfg(target_arch = "wasm32")]
fn main() {
    pepeunit_frontend::launch();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "pepeunit-frontend runs in a browser: build it with `cargo run -p pepeunit-frontend-build`"
    );
}

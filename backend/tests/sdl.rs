//! Exports the GraphQL schema to `docs/`, so every API change shows up in review as a diff there.
//! CI fails when the committed file differs from what this test writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn export_sdl() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/api/schema.graphql");
    let sdl = pepeunit_backend::graphql::sdl();
    assert!(sdl.contains("type QueryRoot"), "{sdl}");
    assert!(sdl.contains("login(login: String!, password: String!): AuthPayload!"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(sdl.as_str()) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, sdl).unwrap();
    }
}

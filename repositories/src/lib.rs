//! Git mirrors of unit firmware repositories (repo_units).
//!
//! This crate will hold everything about repositories that needs no database: cloning and fetching with
//! git2 under `<data dir>/repositories/<uuid>`, listing branches, tags and commits, reading and validating
//! `env_example.json` and `schema_example.json` at any commit, and building firmware bundles (zip, tar,
//! tar.gz). The repo_unit issue fills it; the server's service layer adds rules and storage on top.

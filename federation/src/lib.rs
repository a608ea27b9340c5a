//! Federation between Pepeunit instances over ActivityPub.
//!
//! Instances share unit data with peers an admin trusts, by uuid. This crate will hold the actors,
//! activities and the trust policy (built on `activitypub_federation`); the schema already has the
//! `federation_peers` table and the instance setting `federation_enabled` that switches it on.

//! skopeo, a client nobody here wrote, pulls from the server (see common/skopeo_checks.rs): the
//! cache served as a live flat tree and, opened in place, as a plain OCI layout. The ISO and
//! OCI-wrapped forms are in forms.rs.

#![allow(clippy::unwrap_used)]

mod common;

use common::forms::Form;
use common::skopeo_checks::{
    skopeo_gets_what_the_upstream_registry_served, skopeo_reads_the_demo_cache,
};

#[test]
fn skopeo_reads_the_demo_cache_flat() {
    skopeo_reads_the_demo_cache(Form::Flat);
}

#[test]
fn skopeo_reads_the_demo_cache_oci_layout() {
    skopeo_reads_the_demo_cache(Form::OciLayout);
}

#[test]
fn skopeo_gets_from_the_server_what_the_upstream_registry_served_flat() {
    skopeo_gets_what_the_upstream_registry_served(Form::Flat);
}

#[test]
fn skopeo_gets_from_the_server_what_the_upstream_registry_served_oci_layout() {
    skopeo_gets_what_the_upstream_registry_served(Form::OciLayout);
}

//! Caches opened in place ([`imager_registryd::Root::Cache`]) in the forms that can be read in
//! this tree today: a plain OCI layout, its blobs sent from the layout's own files. The ISO and
//! OCI-wrapped forms, read through the ISO and tar readers, are in forms.rs.

#![allow(clippy::unwrap_used)]

mod common;

use common::forms::{Form, serves_blobs_in_place};

#[test]
fn a_plain_oci_layout_is_served_in_place() {
    serves_blobs_in_place(Form::OciLayout);
}

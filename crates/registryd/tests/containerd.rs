//! The on-node path with the real client (see common/containerd_checks.rs): containerd pulls
//! through the mirror from caches served as live flat trees and, opened in place, as plain OCI
//! layouts. The ISO and OCI-wrapped forms are in forms.rs.

#![allow(clippy::unwrap_used)]

mod common;

use common::containerd_checks::containerd_pulls_every_cached_image_and_runs_one;
use common::forms::Form;

#[test]
fn containerd_pulls_every_cached_image_through_the_mirror_and_runs_one_flat() {
    containerd_pulls_every_cached_image_and_runs_one(Form::Flat);
}

#[test]
fn containerd_pulls_every_cached_image_through_the_mirror_and_runs_one_oci_layout() {
    containerd_pulls_every_cached_image_and_runs_one(Form::OciLayout);
}

//! The shared fixtures live in `imager_registry::testing` (feature `testing`, enabled for this
//! crate's tests by its dev-dependency on itself) so that other crates' tests use the same
//! registry harness; only the token server, which only these tests need, stays here.
#![allow(dead_code)]

pub mod token;

pub use imager_registry::testing::*;

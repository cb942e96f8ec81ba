//! Boot media for Talos-style nodes: what goes where, under which label, with which kernel command
//! line. The byte-level formats are the `imager-iso` and `imager-esp` crates' business; this crate
//! decides the layout (see docs/architecture.md) and makes the output appear atomically.

pub mod assets;
pub mod bootcfg;
pub mod cache;
pub mod formats;
pub mod iso;
pub mod label;
pub mod metal;
pub mod version;

pub use assets::{Assets, AssetsError};
pub use iso::{IsoError, IsoJob, IsoRequest};
pub use metal::{MetalError, MetalJob, MetalRequest, OutFormat};

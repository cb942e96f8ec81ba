//! `cargo xtask demo`.

use anyhow::{Result, bail};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("not implemented yet")
}

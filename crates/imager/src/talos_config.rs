//! What `imager iso` (and `imager metal`) tell the user about the cache on the medium: a one-line
//! summary, and the machine-config patch that makes a node of `--version` use it, printed and,
//! with `--write-config DIR`, written to DIR/talos-image-cache.yaml.

use std::path::Path;

use anyhow::{Context, Result};
use imager_cache::Cache;
use imager_talos::{Version, config, write};
use indicatif::HumanBytes;

/// One line: `image cache: N images in M repositories, B bytes (H)`. The counts come from the
/// cache's listing (tags under `reference/`), without reading a manifest.
pub fn summary(cache: &Cache) -> String {
    let inventory = cache.inventory();
    let images: usize = inventory.repos.iter().map(|r| r.tags.len()).sum();
    let bytes = cache.total_bytes();
    format!(
        "image cache: {images} images in {} repositories, {bytes} bytes ({})",
        inventory.repos.len(),
        HumanBytes(bytes)
    )
}

/// Prints the summary and the patch for Talos `version` to stdout and, with `write_config`,
/// writes the patch into that directory. Call it before the medium is written: a version
/// without an image cache, or a directory that cannot be written, stops the build with
/// `--write-config` named, before any output exists.
pub fn report(cache: Option<&Cache>, version: &str, write_config: Option<&Path>) -> Result<()> {
    let Some(cache) = cache else {
        return Ok(());
    };
    println!("{}", summary(cache));
    let version = Version::parse(version).context("--version")?;
    let patch = match config::image_cache_patch(&version, cache.total_bytes()) {
        Ok(patch) => patch,
        Err(err) if write_config.is_some() => {
            return Err(anyhow::Error::new(err).context("--write-config"));
        }
        Err(err) => {
            eprintln!("imager: warning: {err}");
            return Ok(());
        }
    };
    print!("{patch}");
    if let Some(dir) = write_config {
        let path = write::write_image_cache_patch(dir, &patch).context("--write-config")?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

//! `imager cache verify | list`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use imager_cache::{FlatCache, ReadOptions};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Re-hash every blob and check every manifest, reference and descriptor; non-zero exit on any
    /// problem. PATH: a flat cache, an OCI layout, or a built ISO.
    Verify(InputArgs),
    /// List the cached images: registry, repository, tag, digest, platforms, size.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// A flat cache tree, an OCI image layout (talosctl's oci form, skopeo, oras, crane), or an ISO
    /// made by `imager iso`.
    path: PathBuf,
    /// Platform whose image is read from a multi-platform oci-wrapped layout.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Registry/repository for images an OCI layout names by a bare tag.
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    input: InputArgs,
}

pub fn run(cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Verify(args) => verify(&args),
        CacheCommand::List(args) => list(&args.input),
    }
}

/// The input as a flat tree: an ISO's `imagecache/` is read out into a temp directory, other forms
/// are handed to `imager-cache`. The returned guards remove any temp data when dropped.
fn open(args: &InputArgs) -> Result<(FlatCache, Option<tempfile::TempDir>)> {
    let scratch = tempfile::Builder::new()
        .prefix("imager-cache-")
        .tempdir()
        .context("creating a temp directory")?;
    let input = if is_iso(&args.path)? {
        let dest = scratch.path().join("imagecache");
        imager_iso::extract_dir(&args.path, "/imagecache", &dest)
            .with_context(|| format!("reading the cache out of {}", args.path.display()))?;
        dest
    } else {
        args.path.clone()
    };
    let opts = ReadOptions {
        platform: imager_cache::Platform::parse(&args.platform)
            .with_context(|| format!("--platform {}", args.platform))?,
        ref_prefix: args.image_cache_ref_prefix.clone(),
    };
    let cache = imager_cache::materialize(&input, &opts, scratch.path())?;
    Ok((cache, Some(scratch)))
}

/// An ISO 9660 image has `CD001` in its first volume descriptor, at byte 32769.
fn is_iso(path: &Path) -> Result<bool> {
    use std::os::unix::fs::FileExt;
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if !meta.is_file() {
        return Ok(false);
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 5];
    Ok(file.read_exact_at(&mut magic, 32769).is_ok() && &magic == b"CD001")
}

fn verify(args: &InputArgs) -> Result<()> {
    let (cache, _scratch) = open(args)?;
    let report = imager_cache::verify_flat(cache.path())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
        println!(
            "{}: {} repositories, {} tags, {} manifests, {} blobs ({} bytes); {} errors, {} warnings",
            args.path.display(),
            report.repositories,
            report.tags,
            report.manifests,
            report.blobs,
            report.blob_bytes,
            report.errors().count(),
            report.warnings().count()
        );
    }
    if !report.is_ok() {
        bail!("{} failed verification", args.path.display());
    }
    Ok(())
}

fn list(args: &InputArgs) -> Result<()> {
    let (cache, _scratch) = open(args)?;
    let images = imager_cache::list_flat(cache.path())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(());
    }
    println!(
        "{:<60} {:<73} {:<24} {:>12}",
        "IMAGE", "DIGEST", "PLATFORMS", "SIZE"
    );
    for image in &images {
        println!(
            "{:<60} {:<73} {:<24} {:>12}",
            image.reference,
            image.digest.to_string(),
            image.platforms.join(","),
            image.size
        );
    }
    Ok(())
}

//! `imager cache export`: image tarballs for `ctr images import` and `docker load`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use imager_cache::export::{ExportFormat, export};
use imager_cache::{Cache, Platform, ReadOptions};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The cache: a flat tree, an OCI layout, or an ISO made by `imager iso`.
    cache: PathBuf,
    /// Images to export, as cached (`docker.io/library/busybox:1.36`; `busybox` means
    /// docker.io/library/busybox:latest).
    #[arg(required = true, value_name = "REF")]
    images: Vec<String>,
    /// The tarball, written complete or not at all.
    #[arg(long, short, value_name = "FILE.tar")]
    output: PathBuf,
    /// oci-archive: an OCI layout, every cached platform, bytes unchanged; docker-archive: one
    /// platform per image, with docker's manifest.json.
    #[arg(long, value_enum, default_value_t = FormatArg::OciArchive)]
    format: FormatArg,
    /// The platform docker-archive takes from a multi-platform image (and the image read from a
    /// multi-platform oci-wrapped layout).
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Registry/repository for images an OCI layout names by a bare tag.
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    OciArchive,
    DockerArchive,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let platform =
        Platform::parse(&args.platform).with_context(|| format!("--platform {}", args.platform))?;
    let images = imager_cache::create::parse_images(args.images.iter().map(String::as_str))
        .context("images")?;
    let cache = Cache::open(
        &args.cache,
        &ReadOptions {
            platform: platform.clone(),
            ref_prefix: args.image_cache_ref_prefix.clone(),
        },
    )
    .with_context(|| format!("reading {}", args.cache.display()))?;
    let format = match args.format {
        FormatArg::OciArchive => ExportFormat::OciArchive,
        FormatArg::DockerArchive => ExportFormat::DockerArchive,
    };
    let n = export(&cache, &images, format, &platform, &args.output)
        .with_context(|| format!("exporting from {}", args.cache.display()))?;
    eprintln!("{}: {n} images", args.output.display());
    Ok(())
}

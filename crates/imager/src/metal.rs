//! `imager metal`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use imager_media::bootcfg::BootCfgError;
use imager_media::cache::CacheError;
use imager_media::iso::Arch;
use imager_media::metal::{MetalError, MetalJob, MetalRequest, OutFormat};
use imager_media::version;

#[derive(Debug, Args)]
pub struct MetalArgs {
    /// Kernel image [default: vmlinuz from the assets directory].
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initramfs [default: initramfs.xz from the assets directory].
    #[arg(long, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Image cache, in any form `imager iso` takes (flat tree, OCI layouts, an ISO, a metal
    /// image); written as ext4 to the IMAGECACHE partition, the flat tree at its root.
    #[arg(long, value_name = "PATH")]
    image_cache: Option<PathBuf>,
    /// Registry/repository for images an OCI layout names by a bare tag (e.g. registry.example.com/team/app).
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
    /// Leave out of the image, with a warning, the cache's images no node can pull (an index none
    /// of whose platform images is cached), instead of refusing the cache.
    #[arg(long)]
    skip_unusable_images: bool,
    /// Hash every cache file named by a digest as it is copied, and refuse one whose bytes are not
    /// its name (files of a gzip'd layer are always hashed).
    #[arg(long)]
    verify: bool,
    /// Talos version the image is for: vMAJOR.MINOR.PATCH with an optional -PRERELEASE and +BUILD.
    #[arg(long, default_value = "v1.9.0")]
    version: String,
    /// Appended to the default kernel command line, on BIOS (GRUB) and UEFI (systemd-boot) alike.
    /// Repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,
    /// Directory with the kernel, initramfs and boot loaders [default: $IMAGER_ASSETS, else
    /// /usr/share/imager/assets, else the source tree's _assets/].
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
    /// Directory metal-<arch>.raw.zst (or .raw) is written into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "_out")]
    output: PathBuf,
    /// Target architecture: amd64 (GRUB for BIOS + systemd-boot for UEFI) or arm64 (systemd-boot
    /// only, upstream's sd-boot layout: EFI, META, IMAGECACHE).
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// Output format, upstream's names: `.zst` (zstd, multi-threaded; upstream's metal default)
    /// or `raw` (a sparse raw disk image).
    #[arg(long, value_name = "raw|.zst", default_value = ".zst")]
    out_format: String,
    /// Disk size without the IMAGECACHE partition, which adds its own (upstream's imageOptions
    /// diskSize): bytes, or with a K/M/G/T suffix (powers of 1024) [default: 4247M, upstream's;
    /// 2246M for arm64].
    #[arg(long, value_name = "SIZE")]
    disk_size: Option<String>,
    /// Also write the machine-config patch that makes a node of --version use the cache to
    /// DIR/talos-image-cache.yaml.
    #[arg(long, value_name = "DIR", requires = "image_cache")]
    write_config: Option<PathBuf>,
    /// Refuse the cache, writing nothing, when a node of --version would miss something in it:
    /// the installer image of that version, an image of its Kubernetes bundle (at the release's
    /// defaults), a tag that resolves to no manifest, or an image whose manifest for the
    /// platform, or whose blobs, are not cached. Without it these are warnings.
    #[arg(long, requires = "image_cache")]
    strict: bool,
}

pub fn run(args: MetalArgs) -> Result<()> {
    let arch = Arch::parse(&args.arch).context("--arch")?;
    version::check_version(&args.version).context("--version")?;
    let Some(out_format) = OutFormat::parse(&args.out_format) else {
        bail!(
            "--out-format: {:?} is not an output format (raw or .zst)",
            args.out_format
        );
    };
    let disk_size = match &args.disk_size {
        Some(text) => Some(parse_size(text).with_context(|| format!("--disk-size {text:?}"))?),
        None => None,
    };
    let assets = crate::iso::load_assets(
        args.assets.as_deref(),
        args.kernel.as_deref(),
        args.initramfs.as_deref(),
        arch,
    )?;
    let request = MetalRequest {
        assets,
        image_cache: args.image_cache,
        image_cache_ref_prefix: args.image_cache_ref_prefix,
        version: args.version,
        extra_kernel_args: args.extra_kernel_args,
        output_dir: args.output,
        arch,
        unix_time: crate::iso::build_time()?,
        out_format,
        disk_size,
        skip_unusable_images: args.skip_unusable_images,
        verify: args.verify,
        strict: args.strict,
    };
    let job = MetalJob::prepare(&request).map_err(|err| {
        let context = match &err {
            MetalError::Version(_) => "--version",
            MetalError::BootCfg(BootCfgError::Refused {
                what: "kernel argument",
                ..
            }) => "--extra-kernel-arg",
            MetalError::OutputNotDir { .. } | MetalError::OutputDir { .. } => "--output",
            MetalError::DiskTooSmall { .. } => "--disk-size",
            MetalError::CacheContent(CacheError::Incomplete { .. }) => {
                "--strict (leave it out to write the image with warnings instead)"
            }
            MetalError::CacheContent(CacheError::Unusable { .. }) => {
                "--image-cache (give --skip-unusable-images to leave out the images no node can pull)"
            }
            MetalError::CacheContent(_) | MetalError::CacheRead { .. } => "--image-cache",
            _ => "preparing the disk image",
        };
        anyhow::Error::new(err).context(context)
    })?;
    for file in job.left_out_files() {
        eprintln!(
            "imager: warning: left out of the image: {}: {}",
            file.path.display(),
            file.detail
        );
    }
    for image in job.skipped_images() {
        eprintln!("imager: warning: left out of the image (--skip-unusable-images): {image}");
    }
    for finding in job.cache_findings() {
        eprintln!("imager: warning: {finding}");
    }
    for note in job.cache_notes() {
        eprintln!("imager: note: {note}");
    }
    crate::iso::warn_missing_platform(
        job.cache(),
        job.skipped_images(),
        job.cache_findings(),
        arch,
    );
    crate::talos_config::report(job.cache(), &request.version, args.write_config.as_deref())?;
    let bar = crate::iso::write_bar(job.data_bytes(), job.output());
    let disk = job.disk_size();
    let target = job.output().to_owned();
    let output = job
        .write(&mut |written| bar.set_position(written))
        .with_context(|| format!("writing {}", target.display()))?;
    bar.finish_and_clear();
    println!("{} (disk of {disk} bytes)", output.display());
    Ok(())
}

/// `4247M`, `2G`, `1048576`: bytes, with an optional binary K/M/G/T suffix (an `i`/`iB`/`B`
/// after it is accepted too).
fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .context("not a size: a number of bytes with an optional K/M/G/T suffix")?;
    let shift = match unit
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .trim_end_matches('i')
    {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => bail!("unknown unit {unit:?}: K, M, G or T (powers of 1024)"),
    };
    n.checked_mul(1 << shift).context("too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("4247M").unwrap(), 4247 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("3Mi").unwrap(), 3 << 20);
        assert!(parse_size("").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}

//! `imager iso`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use imager_media::assets::{self, Assets};
use imager_media::bootcfg::BootCfgError;
use imager_media::cache::CacheError;
use imager_media::iso::{Arch, IsoError, IsoJob, IsoRequest};
use imager_media::{label, version};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct IsoArgs {
    /// Kernel image [default: vmlinuz from the assets directory].
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// Initramfs [default: initramfs.xz from the assets directory].
    #[arg(long, value_name = "FILE")]
    initramfs: Option<PathBuf>,
    /// Image cache: a flat cache tree, the OCI layout `talosctl images cache-create` writes, or any
    /// OCI image layout (skopeo, oras, crane, regctl); placed under /imagecache/ as a flat tree.
    #[arg(long, value_name = "PATH")]
    image_cache: Option<PathBuf>,
    /// Registry/repository for images an OCI layout names by a bare tag (e.g. registry.example.com/team/app).
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
    /// Leave out of the medium, with a warning, the cache's images no node can pull (an index
    /// none of whose platform images is cached), instead of refusing the cache.
    #[arg(long)]
    skip_unusable_images: bool,
    /// Hash every cache file named by a digest while it is copied, and refuse one whose bytes
    /// are not its name (files of a gzip'd layer are always hashed). Costs a buffered copy
    /// instead of the kernel's: see docs/benchmarks.md.
    #[arg(long)]
    verify: bool,
    /// Talos version the medium is for, as upstream writes it: vMAJOR.MINOR.PATCH with an
    /// optional -PRERELEASE and +BUILD (v1.9.0, v1.7.6-beta.0); names the volume (v1.9.0 ->
    /// TALOS_V1_9_0, cut to 32 characters as upstream does).
    #[arg(long, default_value = "v1.9.0")]
    version: String,
    /// Volume label instead of the one derived from --version (must start with TALOS_).
    #[arg(long)]
    label: Option<String>,
    /// Appended to the default kernel command line, on BIOS and UEFI alike. Repeatable.
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    extra_kernel_args: Vec<String>,
    /// Directory with the kernel, initramfs and boot loaders [default: $IMAGER_ASSETS, else
    /// /usr/share/imager/assets, else the source tree's _assets/].
    #[arg(long, value_name = "DIR")]
    assets: Option<PathBuf>,
    /// Directory metal-<arch>.iso is written into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "_out")]
    output: PathBuf,
    /// Target architecture: amd64 (BIOS + UEFI) or arm64 (UEFI only; the kernel, initramfs
    /// and systemd-boot come from the assets' arm64/ directory).
    #[arg(long, default_value = "amd64")]
    arch: String,
    /// Also write the machine-config patch that makes a node of --version use the cache (the
    /// image cache turned on, the IMAGECACHE volume sized for it) to DIR/talos-image-cache.yaml.
    #[arg(long, value_name = "DIR", requires = "image_cache")]
    write_config: Option<PathBuf>,
    /// Refuse the cache, writing nothing, when a node of --version would miss something in it:
    /// the installer image of that version, an image of its Kubernetes bundle (at the release's
    /// defaults), a tag that resolves to no manifest, or an image whose manifest for the
    /// platform, or whose blobs, are not cached. Without it these are warnings.
    #[arg(long, requires = "image_cache")]
    strict: bool,
}

pub fn run(args: IsoArgs) -> Result<()> {
    let arch = Arch::parse(&args.arch)?;
    version::check_version(&args.version).context("--version")?;
    let assets = load_assets(
        args.assets.as_deref(),
        args.kernel.as_deref(),
        args.initramfs.as_deref(),
        arch,
    )?;
    let request = IsoRequest {
        assets,
        image_cache: args.image_cache,
        image_cache_ref_prefix: args.image_cache_ref_prefix,
        version: args.version,
        label: args.label,
        extra_kernel_args: args.extra_kernel_args,
        output_dir: args.output,
        arch,
        unix_time: build_time()?,
        skip_unusable_images: args.skip_unusable_images,
        verify: args.verify,
        strict: args.strict,
    };

    let job = IsoJob::prepare(&request).map_err(|err| {
        // Name the flag an error is about; anything else is about preparing the image.
        let context = match &err {
            IsoError::Version(_) => "--version",
            IsoError::Label(_) => "--label",
            IsoError::BootCfg(BootCfgError::Refused {
                what: "kernel argument",
                ..
            }) => "--extra-kernel-arg",
            IsoError::OutputNotDir { .. }
            | IsoError::OutputDir { .. }
            | IsoError::NoRoom { .. } => "--output",
            IsoError::CacheContent(CacheError::Incomplete { .. }) => {
                "--strict (leave it out to write the medium with warnings instead)"
            }
            IsoError::CacheContent(CacheError::Unusable { .. }) => {
                "--image-cache (give --skip-unusable-images to leave out the images no node can pull)"
            }
            IsoError::CacheContent(_) | IsoError::CacheRead { .. } => "--image-cache",
            _ => "preparing the ISO",
        };
        anyhow::Error::new(err).context(context)
    })?;
    for file in job.left_out_files() {
        eprintln!(
            "imager: warning: left out of the medium: {}: {}",
            file.path.display(),
            file.detail
        );
    }
    for image in job.skipped_images() {
        eprintln!("imager: warning: left out of the medium (--skip-unusable-images): {image}");
    }
    for finding in job.cache_findings() {
        eprintln!("imager: warning: {finding}");
    }
    for note in job.cache_notes() {
        eprintln!("imager: note: {note}");
    }
    warn_missing_platform(
        job.cache(),
        job.skipped_images(),
        job.cache_findings(),
        arch,
    );
    if request.label.is_none() && label::label_is_cut(&request.version) {
        eprintln!(
            "imager: note: the label derived from --version {} is cut to {} characters, as \
             upstream does: {}",
            request.version,
            label::MAX_LABEL_LEN,
            job.label()
        );
    }
    crate::talos_config::report(job.cache(), &request.version, args.write_config.as_deref())?;
    let bar = write_bar(job.size(), job.output());
    let label = job.label().to_owned();
    let size = job.size();
    let target = job.output().to_owned();
    let output = job
        .write(&mut |written| bar.set_position(written))
        .with_context(|| format!("writing {}", target.display()))?;
    bar.finish_and_clear();
    // One line, terminal or not: what a CI log needs.
    println!("{} ({} bytes, label {label})", output.display(), size);
    Ok(())
}

/// Warns about each cached image that has images for other platforms but none for `arch`'s:
/// a node of that architecture cannot pull it from the medium (upstream's arm64 users hit exactly
/// this, as "no OCI image found for arm64", at build time). The medium still carries it (the
/// same cache may feed both architectures), so this is a warning, not an error. Best effort:
/// a cache that cannot be listed has already been checked and is `verify`'s to explain.
/// Images in `skipped` are not on the medium and were named already.
pub(crate) fn warn_missing_platform(
    cache: Option<&imager_cache::Cache>,
    skipped: &[imager_cache::UnusableImage],
    findings: &[imager_cache::Finding],
    arch: Arch,
) {
    // An index whose image for the platform is missing has its warning (and `--strict`) already.
    let warned = |reference: &str| {
        findings.iter().any(|f| {
            matches!(f, imager_cache::Finding::NoPlatformImage { names, .. }
                if names.iter().any(|n| n == reference))
        })
    };
    let Some(cache) = cache else {
        return;
    };
    let Ok(wanted) = imager_cache::Platform::parse(&format!("linux/{}", arch.name())) else {
        return;
    };
    let Ok(images) = imager_cache::list(cache) else {
        return;
    };
    for image in images {
        // No platform known (an unreadable manifest or config): nothing to say here.
        if image.platforms.is_empty()
            || skipped.iter().any(|s| s.names.contains(&image.reference))
            || warned(&image.reference)
        {
            continue;
        }
        let cached = image
            .platforms
            .iter()
            .any(|p| imager_cache::Platform::parse(p).is_ok_and(|p| p.matches(&wanted)));
        if !cached {
            eprintln!(
                "imager: warning: {}: no {wanted} image is cached (only {}), so {} nodes cannot \
                 pull it from this medium",
                image.reference,
                image.platforms.join(", "),
                arch.name()
            );
        }
    }
}

/// The boot assets of a medium: `--assets`, else `$IMAGER_ASSETS`, else the defaults, with
/// `--kernel`/`--initramfs` in place of the directory's own.
pub(crate) fn load_assets(
    dir: Option<&Path>,
    kernel: Option<&Path>,
    initramfs: Option<&Path>,
    arch: Arch,
) -> Result<Assets> {
    let env_assets = std::env::var_os("IMAGER_ASSETS").map(PathBuf::from);
    let dir = assets::locate(dir, env_assets.as_deref())?;
    Assets::load(&dir, kernel, initramfs, arch).with_context(|| {
        format!(
            "loading the boot assets (assets directory {})",
            dir.display()
        )
    })
}

/// The progress bar of a medium being written to `output` (`total` bytes).
pub(crate) fn write_bar(total: u64, output: &Path) -> ProgressBar {
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("writing {}", output.display()));
    bar
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub(crate) fn build_time() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => {
            let secs: i64 = value.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")
            })?;
            if secs < 0 {
                bail!("SOURCE_DATE_EPOCH={value:?} is before 1970");
            }
            Ok(secs)
        }
        Err(std::env::VarError::NotPresent) => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)),
        Err(err) => bail!("SOURCE_DATE_EPOCH: {err}"),
    }
}

//! `imager cache push`: a cache into a fleet's registry, and the mirror configuration that sends
//! each cached registry there.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use imager_cache::push::{Dest, PlanOptions, PushOptions};
use imager_cache::{Cache, ReadOptions, Reference};
use imager_registry::{ClientConfig, PlatformSelection, UploadOptions};
use imager_talos::mirror::{self, Endpoint};
use imager_talos::{MirrorStyle, write};

use crate::cache::Bars;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The cache: a flat tree, an OCI layout, or an ISO made by `imager iso`.
    cache: PathBuf,
    /// The registry: host[:port][/path prefix]. REGISTRY/REPO:TAG in the cache becomes
    /// DEST/REPO:TAG (the first component replaced).
    dest: String,
    /// Only these images (repeatable, comma-separated; `-` reads one per line from stdin).
    #[arg(long, value_name = "REF[,REF...]|-", value_delimiter = ',')]
    images: Vec<String>,
    /// Children of multi-platform images to push (repeatable, comma-separated) [default: every
    /// cached one]. The first one also picks the image of a multi-platform oci-wrapped layout.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    platform: Vec<String>,
    /// Keep each cached registry as the first path element (DEST/docker.io/library/alpine):
    /// needed when two cached registries hold the same repository path.
    #[arg(long)]
    keep_registry: bool,
    /// Allow plain HTTP and registries whose TLS certificate cannot be verified.
    #[arg(long)]
    insecure: bool,
    /// Trust these CA certificates (PEM) too.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Blobs sent at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    jobs: usize,
    /// Write the mirror configuration into DIR (DIR/<registry>/hosts.toml, containerd's
    /// config_path, and DIR/talos-registry-mirrors.yaml) instead of printing it.
    #[arg(long, value_name = "DIR")]
    write_config: Option<PathBuf>,
    /// The Talos version the patch is for (before v1.12.0-beta.0 mirrors go under
    /// machine.registries.mirrors) [default: RegistryMirrorConfig documents, v1.12 on].
    #[arg(long, value_name = "vX.Y.Z")]
    talos_version: Option<String>,
    /// Registry/repository for images an OCI layout names by a bare tag.
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
}

pub fn run(args: PushArgs) -> Result<()> {
    let dest = Dest::parse(&args.dest)?;
    let style = match &args.talos_version {
        Some(v) => MirrorStyle::for_version(Some(
            &imager_talos::Version::parse(v).context("--talos-version")?,
        )),
        None => MirrorStyle::for_version(None),
    };
    let platforms = if args.platform.is_empty() {
        None
    } else {
        Some(
            PlatformSelection::parse(args.platform.iter().map(String::as_str))
                .context("--platform")?,
        )
    };
    let open_platform = match &platforms {
        Some(PlatformSelection::Only(p)) => p[0].clone(),
        _ => imager_cache::Platform::linux_amd64(),
    };
    let images = if args.images.is_empty() {
        None
    } else if args.images.iter().any(|i| i == "-") {
        if args.images.len() > 1 {
            bail!("--images -: reads the list from stdin and takes no other reference");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the image list from stdin")?;
        Some(imager_cache::create::parse_image_list(&text).context("--images -")?)
    } else {
        Some(
            imager_cache::create::parse_images(args.images.iter().map(String::as_str))
                .context("--images")?,
        )
    };
    let images: Option<Vec<Reference>> = images;
    let cache = Cache::open(
        &args.cache,
        &ReadOptions {
            platform: open_platform,
            ref_prefix: args.image_cache_ref_prefix.clone(),
        },
    )
    .with_context(|| format!("reading {}", args.cache.display()))?;
    let terminal = std::io::stderr().is_terminal();
    let bars = Arc::new(Bars::new(terminal));
    let lines = bars.clone();
    let opts = PushOptions {
        dest: dest.clone(),
        plan: PlanOptions {
            images,
            platforms,
            keep_registry: args.keep_registry,
        },
        jobs: args.jobs,
        client: ClientConfig {
            insecure: args.insecure,
            ca_bundle: args.ca_file.clone(),
            progress: Some(bars.clone()),
            ..ClientConfig::default()
        },
        upload: UploadOptions::default(),
        image_done: Some(Arc::new(move |image| {
            let target = match &image.tag {
                Some(t) => format!("{}:{t}", image.dest),
                None => format!("{}@{}", image.dest, image.top),
            };
            lines.line(&format!("pushed {} -> {target}", image.source));
        })),
    };
    let result = imager_cache::push::push(&cache, &opts);
    bars.clear();
    let pushed = result.with_context(|| format!("pushing {} to {dest}", args.cache.display()))?;
    eprintln!(
        "{} images to {dest}: {} blobs uploaded ({} bytes), {} mounted, {} already there; {} manifests and {} tags written",
        pushed.plan.images.len(),
        pushed.uploaded,
        pushed.uploaded_bytes,
        pushed.mounted,
        pushed.present,
        pushed.manifests_put,
        pushed.tags_put,
    );
    let scheme = pushed.scheme.unwrap_or("https");
    let mirrors: Vec<(String, Endpoint)> = pushed
        .plan
        .registries
        .iter()
        .map(|(r, path)| (r.clone(), Endpoint::at(scheme, &dest.registry, path)))
        .collect();
    if mirrors.is_empty() {
        return Ok(());
    }
    let what = "pushed to";
    match &args.write_config {
        Some(dir) => {
            for file in write::write_mirror_config_for(dir, &mirrors, what, style)
                .with_context(|| format!("--write-config {}", dir.display()))?
            {
                eprintln!("wrote {}", file.display());
            }
        }
        None => {
            for (r, e) in &mirrors {
                println!("# {r}/hosts.toml\n{}", mirror::hosts_toml_for(r, e, what));
            }
            println!(
                "# {}\n{}",
                mirror::TALOS_PATCH_FILE,
                mirror::talos_patch_for(style, &mirrors)
            );
        }
    }
    Ok(())
}

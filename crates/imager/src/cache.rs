//! `imager cache create | verify | list`.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use imager_cache::create::{ImageSummary, PlannedBlob};
use imager_cache::{Cache, CreateOptions, CreateProgress, OutputLayout, ReadOptions};
use imager_registry::{ClientConfig, Digest, PlatformSelection, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Pull images from registries into a new cache at --image-cache-path (talosctl's `images
    /// cache-create` flags): an OCI layout with one image per platform (default), or the flat tree.
    Create(CreateArgs),
    /// Re-hash every blob and check every manifest, reference and descriptor; non-zero exit on any
    /// problem. PATH: a flat cache, an OCI layout, a built ISO or metal disk image.
    Verify(InputArgs),
    /// List the cached images: registry, repository, tag, digest, platforms, size.
    List(ListArgs),
    /// Serve caches read-only over the OCI distribution API (containerd, skopeo, crane) until
    /// interrupted; with --mirror, print or write the client configuration for it.
    Serve(ServeArgs),
    /// Push every cached image (or --images) to a registry (DEST: host[:port][/path prefix]),
    /// manifests byte-exact, and print or write the mirror configuration that sends each cached
    /// registry there.
    Push(crate::cache_push::PushArgs),
    /// Write images of a cache as a tarball `ctr images import` and `docker load` take.
    Export(crate::cache_export::ExportArgs),
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// A flat cache tree, an OCI image layout (talosctl's oci form, skopeo, oras, crane), an ISO
    /// made by `imager iso`, or a disk image made by `imager metal` (its IMAGECACHE partition).
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

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Where the cache is written; must not exist unless --force.
    #[arg(long, value_name = "PATH")]
    image_cache_path: PathBuf,
    /// Images to cache (repeatable, comma-separated); `-` reads one per line from stdin (blank
    /// lines and `#` comments ignored). `alpine` means docker.io/library/alpine:latest.
    #[arg(
        long,
        value_name = "REF[,REF...]|-",
        value_delimiter = ',',
        required = true
    )]
    images: Vec<String>,
    /// Platforms to cache from multi-platform images (repeatable, comma-separated), or `all`.
    /// The OCI layout gets one image per platform.
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        value_delimiter = ',',
        default_value = "linux/amd64"
    )]
    platform: Vec<String>,
    /// Output form: an OCI image layout wrapping the flat tree, or the flat tree itself.
    #[arg(long, value_enum, default_value_t = LayoutArg::Oci)]
    layout: LayoutArg,
    /// Allow plain HTTP and registries whose TLS certificate cannot be verified.
    #[arg(long)]
    insecure: bool,
    /// Replace an existing cache at --image-cache-path (atomically, once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Blobs downloaded at once.
    #[arg(long, value_name = "N", default_value_t = imager_cache::create::DEFAULT_JOBS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    jobs: usize,
    /// Keep downloaded blobs in DIR across runs (re-hashed before reuse); a re-run, or a run after
    /// a failed one, downloads only what is missing.
    #[arg(long, value_name = "DIR")]
    image_layer_cache_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LayoutArg {
    Oci,
    Flat,
}

pub fn run(cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::Create(args) => create(args),
        CacheCommand::Verify(args) => verify(&args),
        CacheCommand::List(args) => list(&args.input),
        CacheCommand::Serve(args) => serve(args),
        CacheCommand::Push(args) => crate::cache_push::run(args),
        CacheCommand::Export(args) => crate::cache_export::run(args),
    }
}

/// Opens the input in place, whatever its form (flat tree, OCI layout, a built ISO or metal image).
fn open(args: &InputArgs) -> Result<Cache> {
    let opts = ReadOptions {
        platform: imager_cache::Platform::parse(&args.platform)
            .with_context(|| format!("--platform {}", args.platform))?,
        ref_prefix: args.image_cache_ref_prefix.clone(),
    };
    Cache::open(&args.path, &opts).with_context(|| format!("reading {}", args.path.display()))
}

fn verify(args: &InputArgs) -> Result<()> {
    let cache = open(args)?;
    let report = imager_cache::verify(&cache)?;
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
    let cache = open(args)?;
    let images = imager_cache::list(&cache)?;
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
            escaped(&image.reference),
            image.digest.to_string(),
            escaped(&image.platforms.join(",")),
            image.size
        );
    }
    Ok(())
}

/// `text` as Rust escapes it in a string literal (`\n`, `\u{1b}`, `\\`) when it holds a
/// character a terminal would not show as itself (a control character, a line or paragraph
/// separator, an unassigned or invisible one) or a backslash; otherwise as it is. Names in a
/// cache come from files anyone can write: one row per image, whatever the names hold.
fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c == '"' || c == '\'' || (c != '\\' && c.escape_debug().len() == 1);
    if text.chars().all(plain) {
        text.into()
    } else {
        text.escape_debug().to_string().into()
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let images = if args.images.iter().any(|i| i == "-") {
        if args.images.len() > 1 {
            bail!("--images -: reads the list from stdin and takes no other reference");
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the image list from stdin")?;
        imager_cache::create::parse_image_list(&text).context("--images -")?
    } else {
        imager_cache::create::parse_images(args.images.iter().map(String::as_str))
            .context("--images")?
    };
    let platforms =
        PlatformSelection::parse(args.platform.iter().map(String::as_str)).context("--platform")?;
    let terminal = std::io::stderr().is_terminal();
    let progress = Arc::new(Bars::new(terminal));
    let mut opts = CreateOptions::new(args.image_cache_path, images);
    opts.platforms = platforms;
    opts.layout = match args.layout {
        LayoutArg::Oci => OutputLayout::Oci,
        LayoutArg::Flat => OutputLayout::Flat,
    };
    opts.force = args.force;
    opts.jobs = args.jobs;
    opts.layer_cache = args.image_layer_cache_path;
    opts.client = ClientConfig {
        insecure: args.insecure,
        ..ClientConfig::default()
    };
    opts.source_date_epoch = source_date_epoch()?;
    opts.progress = Some(progress.clone());
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(imager_cache::create(&opts));
    progress.clear();
    let created = result?;
    let layout = match opts.layout {
        OutputLayout::Flat => "flat tree".to_owned(),
        OutputLayout::Oci => format!(
            "OCI layout, images for {}",
            created
                .layout_platforms
                .iter()
                .map(|p| p.as_deref().unwrap_or("no platform"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    println!(
        "{}: {} images, {} blobs ({} bytes; {} downloaded, {} bytes), {layout}",
        created.path.display(),
        created.images.len(),
        created.blobs,
        created.blob_bytes,
        created.downloaded,
        created.downloaded_bytes,
    );
    Ok(())
}

/// `SOURCE_DATE_EPOCH` dates the OCI layout; without it, the epoch itself (0): a cache's content
/// does not depend on when it was made, so its bytes should not either.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds")),
        Err(std::env::VarError::NotPresent) => Ok(0),
        Err(err) => bail!("SOURCE_DATE_EPOCH: {err}"),
    }
}

/// Progress of `cache create`: on a terminal, an overall bar (bytes of all blobs) and one bar per
/// blob in flight; otherwise one line per image and per retry, for logs.
pub(crate) struct Bars {
    terminal: bool,
    multi: MultiProgress,
    overall: ProgressBar,
    sizes: Mutex<HashMap<String, u64>>,
    /// Per blob in flight: its bar and the bytes already counted in the overall bar.
    blobs: Mutex<HashMap<String, (ProgressBar, u64)>>,
    layout: Mutex<Option<ProgressBar>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Progress state is only counters and bars; a panic elsewhere does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bars {
    pub(crate) fn new(terminal: bool) -> Self {
        let multi = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let overall = multi.add(ProgressBar::new(0).with_style(style(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )));
        overall.set_message("resolving");
        overall.enable_steady_tick(Duration::from_millis(200));
        Self {
            terminal,
            multi,
            overall,
            sizes: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            layout: Mutex::new(None),
        }
    }

    /// A line above the bars on a terminal, on stderr otherwise.
    pub(crate) fn line(&self, text: &str) {
        if self.terminal {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    pub(crate) fn clear(&self) {
        for (_, (bar, _)) in lock(&self.blobs).drain() {
            bar.finish_and_clear();
        }
        if let Some(bar) = lock(&self.layout).take() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}

impl Progress for Bars {
    fn blob_started(&self, digest: &Digest, size: Option<u64>) {
        let bar = self.multi.add(
            ProgressBar::new(size.unwrap_or(0))
                .with_style(style("  {prefix:19} [{bar:30}] {bytes}/{total_bytes}")),
        );
        bar.set_prefix(digest.to_string().chars().take(19).collect::<String>());
        lock(&self.blobs).insert(digest.to_string(), (bar, 0));
    }

    fn blob_advanced(&self, digest: &Digest, total: u64) {
        if let Some((bar, counted)) = lock(&self.blobs).get_mut(&digest.to_string()) {
            bar.set_position(total);
            self.overall.inc(total.saturating_sub(*counted));
            *counted = total.max(*counted);
        }
    }

    fn blob_finished(&self, digest: &Digest, downloaded: bool) {
        let key = digest.to_string();
        match lock(&self.blobs).remove(&key) {
            Some((bar, _)) => bar.finish_and_clear(),
            // A verified copy from the layer cache: it counts as done at once.
            None if !downloaded => {
                self.overall
                    .inc(lock(&self.sizes).get(&key).copied().unwrap_or(0));
            }
            None => {}
        }
    }

    fn retrying(&self, image: &str, what: &str, attempt: u32, wait: Duration, cause: &str) {
        self.line(&format!(
            "retrying {image}: {what} in {wait:.1?} (attempt {attempt} failed: {cause})"
        ));
    }
}

impl CreateProgress for Bars {
    fn image_planned(&self, image: &ImageSummary) {
        let platforms = if image.platforms.is_empty() {
            String::new()
        } else {
            format!(" [{}]", image.platforms.join(", "))
        };
        self.line(&format!(
            "{} {}{platforms}: {} blobs, {} bytes",
            image.reference, image.digest, image.blobs, image.bytes
        ));
    }

    fn blobs_planned(&self, blobs: &[PlannedBlob]) {
        let mut sizes = lock(&self.sizes);
        for b in blobs {
            sizes.insert(b.digest.to_string(), b.size);
        }
        self.overall.set_length(blobs.iter().map(|b| b.size).sum());
        self.overall.set_message("downloading");
    }

    fn layout_started(&self, total: u64) {
        self.overall.finish_and_clear();
        let bar = self.multi.add(ProgressBar::new(total).with_style(style(
            "{msg:12} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )));
        bar.set_message("OCI layer");
        *lock(&self.layout) = Some(bar);
        if !self.terminal {
            eprintln!("hashing the rest of the OCI layer ({total} bytes in all)");
        }
    }

    fn layout_advanced(&self, done: u64) {
        if let Some(bar) = lock(&self.layout).as_ref() {
            bar.set_position(done);
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Caches to serve, in priority order (the first good copy wins): flat trees, OCI layouts,
    /// ISOs made by `imager iso` or disk images made by `imager metal`, each served in place
    /// (blobs sent from the image or the layout's files, no copy). An OCI layout whose cache layer is gzip-compressed (talosctl's) cannot be.
    #[arg(
        long,
        value_name = "PATH[,PATH...]",
        value_delimiter = ',',
        required_unless_present = "paths"
    )]
    image_cache_path: Vec<PathBuf>,
    /// The same as --image-cache-path, given as arguments (`imager cache serve metal-amd64.iso`);
    /// served after any --image-cache-path.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:3172")]
    address: std::net::SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Registries this server mirrors (repeatable, comma-separated): prints containerd's
    /// hosts.toml for each and a Talos RegistryMirrorConfig patch pointing at the server.
    #[arg(long, value_name = "REGISTRY[,REGISTRY...]", value_delimiter = ',')]
    mirror: Vec<String>,
    /// With --mirror: write the configuration into DIR instead (DIR/<registry>/hosts.toml, so DIR
    /// is containerd's config_path, and DIR/talos-registry-mirrors.yaml).
    #[arg(long, value_name = "DIR", requires = "mirror")]
    write_config: Option<PathBuf>,
    /// With --mirror: the Talos version the patch is for (before v1.12.0-beta.0 mirrors go under
    /// machine.registries.mirrors) [default: RegistryMirrorConfig documents, v1.12 on].
    #[arg(long, value_name = "vX.Y.Z", requires = "mirror")]
    talos_version: Option<String>,
    /// Platform whose image is read from a multi-platform oci-wrapped layout.
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Registry/repository for images an OCI layout names by a bare tag.
    #[arg(long, value_name = "REPO")]
    image_cache_ref_prefix: Option<String>,
    /// Log every request to stderr.
    #[arg(long)]
    access_log: bool,
}

fn serve(mut args: ServeArgs) -> Result<()> {
    use imager_registryd::{Config, Root, Server, TlsFiles};
    use imager_talos::{MirrorStyle, mirror, write};
    args.image_cache_path.append(&mut args.paths);
    let style = match &args.talos_version {
        Some(v) => MirrorStyle::for_version(Some(
            &imager_talos::Version::parse(v).context("--talos-version")?,
        )),
        None => MirrorStyle::for_version(None),
    };
    let registries = if args.mirror.is_empty() {
        Vec::new()
    } else {
        mirror::parse_registries(&args.mirror)?
    };
    let mut roots = Vec::new();
    for path in &args.image_cache_path {
        let input = InputArgs {
            path: path.clone(),
            platform: args.platform.clone(),
            image_cache_ref_prefix: args.image_cache_ref_prefix.clone(),
            json: false,
        };
        let cache = open(&input)?;
        // A flat tree stays live (a node's disk copy may change while it is served); any other
        // form is served from where its entries lie, as listed now.
        roots.push(if cache.form() == imager_cache::InputForm::Flat {
            Root::Tree(path.clone())
        } else {
            Root::Cache(Arc::new(cache))
        });
    }
    let scheme = if args.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    let mut config = Config::new(roots);
    config.address = args.address;
    config.access_log = args.access_log;
    config.tls = args
        .tls_cert_file
        .zip(args.tls_key_file)
        .map(|(cert, key)| TlsFiles { cert, key });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        // The configuration is for clients on this machine: an unspecified address (0.0.0.0) is
        // reached there through loopback (a network mirror's clients need the host's name).
        let mut reach = server.local_addr();
        if reach.ip().is_unspecified() {
            reach.set_ip(match reach {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let url = format!("{scheme}://{reach}");
        if !registries.is_empty() {
            match &args.write_config {
                Some(dir) => {
                    for file in write::write_mirror_config(dir, &registries, &url, style)
                        .context("--write-config")?
                    {
                        eprintln!("wrote {}", file.display());
                    }
                }
                None => {
                    for r in &registries {
                        println!("# {r}/hosts.toml\n{}", mirror::hosts_toml(r, &url));
                    }
                    println!(
                        "# Talos machine-config patch ({})\n{}",
                        mirror::TALOS_PATCH_FILE,
                        mirror::talos_patch(style, &registries, &url)
                    );
                }
            }
        }
        let paths: Vec<String> = args
            .image_cache_path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        eprintln!("serving {} on {url}", paths.join(", "));
        server.serve(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Ctrl-C or SIGTERM (systemd, a container runtime).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn names_are_escaped_only_when_needed() {
        for plain in [
            "docker.io/library/alpine:3.20",
            "x/y:\"quoted\"",
            "ghcr.io/é:ü",
        ] {
            assert_eq!(escaped(plain), plain);
        }
        for (raw, shown) in [
            ("r/a:evil\nrow", r"r/a:evil\nrow"),
            ("r/a:t\r\t", r"r/a:t\r\t"),
            ("r/a:\u{1b}[31mred", r"r/a:\u{1b}[31mred"),
            ("r/a:back\\slash\n", r"r/a:back\\slash\n"),
            ("r/a:back\\slash", r"r/a:back\\slash"),
            ("r/a:line\u{2028}sep", r"r/a:line\u{2028}sep"),
        ] {
            assert_eq!(escaped(raw), shown);
            assert!(!escaped(raw).contains(['\n', '\r']));
        }
    }
}

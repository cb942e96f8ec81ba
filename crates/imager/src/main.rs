//! The `imager` command line: argument parsing, progress and error context over the library
//! crates. Nothing here decides a layout or a format.

mod cache;
mod cache_export;
mod cache_push;
mod images;
mod iso;
mod metal;
mod talos_config;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "imager",
    version,
    about = "Bootable installer media with an OCI image cache, for air-gapped Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a hybrid ISO (BIOS + UEFI on amd64, UEFI on arm64; CD + USB) with an image cache:
    /// DIR/metal-<arch>.iso.
    Iso(iso::IsoArgs),
    /// Write a GPT raw disk image (UEFI, + BIOS on amd64) with the cache on its ext4 IMAGECACHE partition:
    /// DIR/metal-<arch>.raw.zst, or .raw.
    Metal(metal::MetalArgs),
    /// Create and inspect image caches.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Image lists.
    #[command(subcommand)]
    Images(images::ImagesCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that write output stage it beside its final path; on SIGINT or SIGTERM those
    // temps are removed and the exit status is 130 or 143. `cache serve` shuts down on the same
    // signals by itself; the others write nothing.
    let stages = matches!(
        cli.command,
        Command::Iso(_)
            | Command::Metal(_)
            | Command::Cache(cache::CacheCommand::Create(_) | cache::CacheCommand::Export(_))
    );
    if stages && let Err(err) = imager_staging::exit_on_signals(report_interrupted) {
        eprintln!("imager: error: watching for SIGINT and SIGTERM: {err}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Iso(args) => iso::run(args),
        Command::Metal(args) => metal::run(args),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Images(cmd) => images::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imager: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the signal cleanup did, on stderr.
fn report_interrupted(done: &imager_staging::Interrupted) {
    use std::io::IsTerminal as _;
    // A progress bar may hold the terminal's current line.
    let start = if std::io::stderr().is_terminal() {
        "\n"
    } else {
        ""
    };
    let removed: Vec<String> = done
        .removed
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if removed.is_empty() {
        eprintln!("{start}imager: interrupted by {}", done.name);
    } else {
        eprintln!(
            "{start}imager: interrupted by {}; removed the unfinished {}",
            done.name,
            removed.join(", ")
        );
    }
    for (path, err) in &done.failed {
        eprintln!("imager: error: could not remove {}: {err}", path.display());
    }
}

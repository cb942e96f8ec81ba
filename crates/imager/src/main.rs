//! The `imager` command line: argument parsing, progress and error context over the library
//! crates. Nothing here decides a layout or a format.

mod cache;
mod images;
mod iso;
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
    /// Write a hybrid ISO (BIOS + UEFI, CD + USB) with an image cache: DIR/metal-<arch>.iso.
    Iso(iso::IsoArgs),
    /// Create and inspect image caches.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Image lists.
    #[command(subcommand)]
    Images(images::ImagesCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Iso(args) => iso::run(args),
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

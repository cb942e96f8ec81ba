//! `imager images k8s-bundle` (alias `default`) and `imager images talos-bundle`: the images a
//! Talos release pulls, one per line, ready for `imager cache create --images=-`. The rules are
//! `imager_talos::images`'.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use imager_talos::Version;
use imager_talos::images::{self, K8sVersions, Release};

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Print the Kubernetes images of a Talos release for any Kubernetes version, one
    /// reference per line (as `talosctl image k8s-bundle`).
    #[command(name = "k8s-bundle", visible_alias = "default")]
    K8sBundle(K8sBundleArgs),
    /// Print the images a Talos release is built and installed from: installer (before 1.14),
    /// installer-base, imager, talos, talosctl-all, overlays, extensions (as `talosctl image
    /// talos-bundle`, without looking the extensions and overlays up in a registry).
    #[command(name = "talos-bundle")]
    TalosBundle(TalosBundleArgs),
}

#[derive(Debug, Args)]
pub struct K8sBundleArgs {
    /// Talos version whose rules and defaults apply (repositories, pause image, the list's
    /// shape) [default: the newest Talos release known, v1.13.9].
    #[arg(long, value_name = "vX.Y.Z")]
    talos_version: Option<String>,
    /// Kubernetes semantic version [default: the Talos release's].
    #[arg(long, value_name = "VERSION")]
    k8s_version: Option<String>,
    /// etcd semantic version [default: the Talos release's].
    #[arg(long, value_name = "VERSION")]
    etcd_version: Option<String>,
    /// Flannel CNI semantic version [default: the Talos release's].
    #[arg(long, value_name = "VERSION")]
    flannel_version: Option<String>,
    /// CoreDNS semantic version [default: the Talos release's].
    #[arg(long, value_name = "VERSION")]
    coredns_version: Option<String>,
    /// kube-network-policies semantic version, Talos 1.13 on [default: the Talos release's].
    #[arg(long, value_name = "VERSION")]
    kube_network_policies_version: Option<String>,
}

#[derive(Debug, Args)]
pub struct TalosBundleArgs {
    /// Talos version (vX.Y.Z, v1.11.0-alpha.0 or later) [default: the newest Talos release
    /// known, v1.13.9].
    #[arg(value_name = "VERSION")]
    version: Option<String>,
}

pub fn run(cmd: ImagesCommand) -> Result<()> {
    let list = match cmd {
        ImagesCommand::K8sBundle(args) => k8s_bundle(args)?,
        ImagesCommand::TalosBundle(args) => {
            let version = args
                .version
                .unwrap_or_else(|| Release::newest().source.to_owned());
            images::talos_bundle(&version)?
        }
    };
    for image in list {
        println!("{image}");
    }
    Ok(())
}

fn k8s_bundle(args: K8sBundleArgs) -> Result<Vec<String>> {
    let talos = match &args.talos_version {
        Some(v) => Version::parse(v).context("--talos-version")?,
        None => Version::parse(Release::newest().source)
            .context("the newest Talos release's version")?,
    };
    let release = Release::for_talos(&talos).context("--talos-version")?;
    let versions = K8sVersions {
        kubernetes: args.k8s_version,
        etcd: args.etcd_version,
        coredns: args.coredns_version,
        flannel: args.flannel_version,
        kube_network_policies: args.kube_network_policies_version,
    };
    Ok(images::k8s_bundle(release, &talos, &versions)?)
}

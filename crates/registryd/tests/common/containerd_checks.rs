//! The on-node path, with the real client: a private containerd (own root, state and socket)
//! whose hosts directory (written by `imager_talos::write::write_mirror_config`) sends every registry to the server
//! and whose upstream is a closed loopback port, so anything not served by us fails the pull.
//! `ctr image pull` pulls every cached image, from two roots; then `ctr run` runs a busybox
//! image built from Debian's static busybox (`imager_registry::testing::containerd`), which prints `ok`. Parametrized by the
//! form the caches are served in; the tests are in containerd.rs and forms.rs.

use std::time::{Duration, Instant};

use super::forms::Form;
use super::{Cached, Fixture, TestServer, demo_cache, sha256_hex, write_cache};
use imager_registry::testing::containerd::{Containerd, busybox_image, tail};
use imager_registryd::Config;
use imager_talos::MirrorStyle;
use imager_talos::mirror;
use imager_talos::write::write_mirror_config;

/// containerd pulls every image of two roots served in `form` (the test images with a runnable
/// busybox, and the demo cache) through the mirror configuration, then runs the busybox.
pub fn containerd_pulls_every_cached_image_and_runs_one(form: Form) {
    let containerd = Containerd::start();
    // Root 1: the test images and a runnable busybox; root 2: the repository's demo cache.
    let f = Fixture::new();
    let busybox = Cached::single(
        "docker.io",
        "library/busybox",
        "imager-test",
        &busybox_image(),
    );
    write_cache(f.root(), std::slice::from_ref(&busybox));
    let demo = demo_cache();
    let work = tempfile::tempdir().unwrap();
    let mut config = Config::new(vec![
        form.root(f.root(), &work.path().join("forms")),
        form.root(&demo, &work.path().join("forms")),
    ]);
    config.access_log = true;
    let s = TestServer::start_with(config);

    // The hosts directory as `imager cache serve --mirror ... --write-config` writes it, with
    // the upstream replaced by a port nothing listens on.
    let hosts = tempfile::tempdir().unwrap();
    let registries = mirror::parse_registries(&["docker.io,ghcr.io,registry.example.com"]).unwrap();
    write_mirror_config(
        hosts.path(),
        &registries,
        &format!("http://{}", s.host()),
        MirrorStyle::RegistryMirrorConfig,
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for r in &registries {
        let path = hosts.path().join(r).join("hosts.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let upstream = text.lines().find(|l| l.starts_with("server = ")).unwrap();
        let text = text.replace(upstream, &format!("server = \"http://{closed}\""));
        std::fs::write(&path, text).unwrap();
    }
    let hosts_dir = hosts.path().display().to_string();

    let demo_busybox =
        std::fs::read(demo.join("manifests/docker.io/library/busybox/reference/latest")).unwrap();
    let csi = "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar";
    let demo_csi = std::fs::read(demo.join(format!("manifests/{csi}/reference/v2.13.0"))).unwrap();
    let mut pulls: Vec<(String, String, &str)> = f
        .images()
        .into_iter()
        .chain([&busybox])
        .map(|c| {
            (
                format!("{}:{}", c.name, c.tag),
                c.top.digest.clone(),
                "--all-platforms",
            )
        })
        .collect();
    // The demo busybox index names an arm64 child the cache leaves out (as real caches do).
    pulls.push((
        "docker.io/library/busybox:latest".into(),
        format!("sha256:{}", sha256_hex(&demo_busybox)),
        "--platform=linux/amd64",
    ));
    pulls.push((
        format!("{csi}:v2.13.0"),
        format!("sha256:{}", sha256_hex(&demo_csi)),
        "--all-platforms",
    ));

    let started = Instant::now();
    for (reference, _, platforms) in &pulls {
        containerd.ctr_ok(
            &[
                "image",
                "pull",
                "--hosts-dir",
                &hosts_dir,
                platforms,
                reference,
            ],
            Duration::from_secs(60),
        );
    }
    eprintln!(
        "containerd: pulled {} images in {:.1} s",
        pulls.len(),
        started.elapsed().as_secs_f64()
    );
    let listed = containerd.ctr_ok(&["image", "ls"], Duration::from_secs(20));
    for (reference, digest, _) in &pulls {
        let line = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
            .unwrap_or_else(|| panic!("{reference} not in `ctr image ls`:\n{listed}"));
        assert!(line.contains(digest.as_str()), "{reference}: {line}");
    }
    // containerd asked the mirror, naming each registry with ?ns=.
    let logs = s.logs();
    for ns in ["ns=docker.io", "ns=ghcr.io", "ns=registry.example.com"] {
        assert!(logs.contains(ns), "no request with {ns}:\n{logs}");
    }
    assert!(!logs.contains("not served from this root"), "{logs}");

    // runc keeps container state by namespace and id under one directory whichever containerd
    // runs it: tests running at once need ids of their own.
    let id = format!("imager-registryd-test-{form:?}-{}", std::process::id()).to_lowercase();
    let out = containerd.ctr(
        &["run", "--rm", "docker.io/library/busybox:imager-test", &id],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "ctr run: {}\n{}\ncontainerd log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        tail(&containerd.log(), 30)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

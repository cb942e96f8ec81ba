//! The `imager cache create` and `imager images default` commands as users run them: the built
//! binary, a list on stdin, a real registry (Debian's docker-registry, images pushed by skopeo),
//! exit codes and messages.

// Test code: a panic with its message is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use imager_registry::testing::{Registry, RegistryOptions, push_image, test_image};

fn imager(args: &[&str], stdin: &str, env_dir: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imager"))
        .args(args)
        // No credentials or dates of the host.
        .env("DOCKER_CONFIG", env_dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn create_from_stdin_then_verify_list_and_force() {
    let work = tempfile::tempdir().unwrap();
    let registry = Registry::start(RegistryOptions::default());
    let host = registry.host();
    push_image(
        work.path(),
        &host,
        "test/one",
        "v1",
        &test_image("amd64", 32 << 10),
        None,
    );
    push_image(
        work.path(),
        &host,
        "test/two",
        "v2",
        &test_image("arm64", 32 << 10),
        None,
    );
    let out = work.path().join("cache");
    let out_s = out.to_str().unwrap();
    let list = format!(
        "# the cluster's images\n{host}/test/one:v1\n\n{host}/test/two:v2  # arm64 build\n"
    );

    let o = imager(
        &[
            "cache",
            "create",
            "--image-cache-path",
            out_s,
            "--images=-",
            "--layout",
            "flat",
            "--insecure",
        ],
        &list,
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Not a terminal: one line per image on stderr, the summary on stdout.
    let stderr = text(&o.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{host}/test/one:v1 sha256:")),
        "{stderr}"
    );
    assert!(lines[1].contains(": 3 blobs, "), "{stderr}");
    assert!(
        text(&o.stdout).starts_with(&format!("{out_s}: 2 images, 6 blobs (")),
        "{}",
        text(&o.stdout)
    );
    let v = imager(&["cache", "verify", out_s], "", work.path());
    assert!(v.status.success(), "{}", text(&v.stdout));

    // Again: refused, exit 1, the cache untouched.
    let o = imager(
        &[
            "cache",
            "create",
            "--image-cache-path",
            out_s,
            "--images",
            &format!("{host}/test/one:v1"),
            "--insecure",
        ],
        "",
        work.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!("imager: error: {out_s} already exists; give --force to replace it\n")
    );

    // --force, OCI layout (the default), both platforms: listed through the reader.
    let o = imager(
        &[
            "cache",
            "create",
            "--image-cache-path",
            out_s,
            "--images",
            &format!("{host}/test/one:v1,{host}/test/two:v2"),
            "--platform",
            "linux/amd64,linux/arm64",
            "--insecure",
            "--force",
            "--jobs",
            "1",
        ],
        "",
        work.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("OCI layout, images for linux/amd64, linux/arm64"),
        "{}",
        text(&o.stdout)
    );
    assert!(out.join("oci-layout").is_file());
    let l = imager(
        &[
            "cache",
            "list",
            out_s,
            "--platform",
            "linux/arm64",
            "--json",
        ],
        "",
        work.path(),
    );
    assert!(l.status.success(), "{}", text(&l.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    let refs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        refs,
        [format!("{host}/test/one:v1"), format!("{host}/test/two:v2")]
    );
    // Nothing beside the output.
    let mut beside: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("cache"))
        .collect();
    beside.sort();
    assert_eq!(beside, ["cache"]);
}

#[test]
fn bad_references_fail_before_any_request() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("cache");
    // A registry address nothing listens on: a request would fail differently, and slowly.
    for (images, stdin, expected) in [
        (
            "127.0.0.1:9/ok:v1,127.0.0.1:9/Bad/Name",
            "",
            "imager: error: --images: image reference \"127.0.0.1:9/Bad/Name\": repository names must be lower case\n",
        ),
        (
            "-",
            "127.0.0.1:9/ok:v1\n127.0.0.1:9/x/../etc\n",
            "imager: error: --images -: line 2 of the image list: image reference \"127.0.0.1:9/x/../etc\": repository path component \"..\" is not allowed\n",
        ),
    ] {
        let o = imager(
            &[
                "cache",
                "create",
                "--image-cache-path",
                out.to_str().unwrap(),
                "--images",
                images,
                "--insecure",
            ],
            stdin,
            work.path(),
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
        assert_eq!(text(&o.stderr), expected);
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }
}

#[test]
fn images_default() {
    let dir = tempfile::tempdir().unwrap();
    let o = imager(
        &["images", "default", "--k8s-version", "v1.33.4"],
        "",
        dir.path(),
    );
    assert!(o.status.success());
    let stdout = text(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[4], "registry.k8s.io/kube-apiserver:v1.33.4");
    assert!(lines.contains(&"ghcr.io/siderolabs/kubelet:v1.33.4"));
    // Ready for `cache create --images=-`: every line parses as a reference.
    imager_cache::create::parse_image_list(&stdout).unwrap();
    // Any Kubernetes version: the tags follow it.
    let o = imager(
        &["images", "default", "--k8s-version", "v1.99.0"],
        "",
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("registry.k8s.io/kube-proxy:v1.99.0\n"));
    let o = imager(
        &["images", "default", "--k8s-version", "latest"],
        "",
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("--k8s-version: invalid semantic version \"latest\""),
        "{}",
        text(&o.stderr)
    );
}

//! Never a byte that does not match the digest asked for: damaged copies in one root fall
//! through to the next; with no good copy left the answer is a 500 naming the digest (in the
//! body and in the log). A blob is hashed once per file, and again when the file is replaced.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{Fixture, TestServer, copy_tree, digest, get};
use imager_cache::flat::{blob_path, manifest_path, tag_path};

struct Damage {
    /// Requests that must not be answered from the damaged root.
    targets: Vec<String>,
    /// The digest each of them is about (what the log must name).
    digests: Vec<String>,
}

/// Copies the fixture into `dir` and damages one thing of each kind.
fn damaged_copy(f: &Fixture, dir: &Path) -> Damage {
    copy_tree(f.root(), dir);
    let mut targets = Vec::new();
    let mut digests = Vec::new();

    // A layer with one byte flipped: right size, wrong content.
    let big = f.big_blob();
    let path = dir.join(blob_path(&digest(big)));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[big.bytes[1000] ^ 0xff], 1000).unwrap();
    targets.push(format!("/v2/team/app/blobs/{}", big.digest));
    digests.push(big.digest.clone());

    // A layer cut short: its size differs from what the manifest says.
    let layer = &f.small.blobs[2];
    let path = dir.join(blob_path(&digest(layer)));
    std::fs::write(&path, &layer.bytes[..layer.bytes.len() / 2]).unwrap();
    targets.push(format!("/v2/small/blobs/{}", layer.digest));
    digests.push(layer.digest.clone());

    // A config emptied.
    let config = &f.small.blobs[0];
    std::fs::write(dir.join(blob_path(&digest(config))), b"").unwrap();
    targets.push(format!("/v2/small/blobs/{}", config.digest));
    digests.push(config.digest.clone());

    // A tag file whose bytes are no manifest of its repository.
    let app = &f.app;
    std::fs::write(dir.join(tag_path(&app.name, &app.tag)), &f.small.top.bytes).unwrap();
    targets.push(format!("/v2/team/app/manifests/v1?{}", app.ns()));
    digests.push(f.small.top.digest.clone());

    // A manifest stored under its digest with other content.
    let child = &f.multi.manifests[1];
    let path = dir.join(manifest_path(&f.multi.name, &digest(child)));
    let mut bytes = child.bytes.clone();
    bytes[10] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    targets.push(format!(
        "/v2/org/multi/manifests/{}?{}",
        child.digest,
        f.multi.ns()
    ));
    digests.push(child.digest.clone());

    Damage { targets, digests }
}

/// The bytes a request must get from a good root.
fn expected(f: &Fixture, target: &str) -> Vec<u8> {
    let all = f
        .images()
        .into_iter()
        .flat_map(|i| i.blobs.iter().chain(&i.manifests))
        .cloned()
        .collect::<Vec<_>>();
    if target.contains("/manifests/v1") {
        return f.app.top.bytes.clone();
    }
    all.into_iter()
        .find(|b| target.contains(&b.digest))
        .map(|b| b.bytes)
        .unwrap()
}

#[test]
fn damaged_copies_fall_through_to_the_next_root() {
    let f = Fixture::new();
    let damaged = tempfile::tempdir().unwrap();
    let d = damaged_copy(&f, damaged.path());
    let s = TestServer::start(&[damaged.path(), f.root()]);
    // The manifest first, so the blob sizes it gives are known (the size check).
    assert_eq!(get(s.addr, "/v2/small/manifests/1.0").status, 200);
    for target in &d.targets {
        let r = get(s.addr, target);
        assert_eq!(r.status, 200, "{target}: {}", r.body_text());
        assert_eq!(r.body, expected(&f, target), "{target}");
    }
    let logs = s.logs();
    for digest in &d.digests {
        assert!(logs.contains(digest), "log does not name {digest}:\n{logs}");
    }
    assert!(logs.contains("root 1 ("), "{logs}");
    assert!(logs.contains("but its manifest says"), "{logs}");
    assert!(
        logs.contains("is not a digest/ file of the repository"),
        "{logs}"
    );
}

#[test]
fn with_no_good_copy_the_answer_is_a_500_naming_the_digest() {
    let f = Fixture::new();
    let damaged = tempfile::tempdir().unwrap();
    let d = damaged_copy(&f, damaged.path());
    let s = TestServer::start(&[damaged.path()]);
    for (target, digest) in d.targets.iter().zip(&d.digests) {
        let r = get(s.addr, target);
        assert_eq!(r.status, 500, "{target}: {}", r.body_text());
        assert_eq!(r.error_code(), "UNKNOWN");
        // HEAD agrees with GET (it checks the same way).
        let h = common::raw(s.addr, "HEAD", target.as_bytes(), &[]);
        assert_eq!(h.status, 500, "HEAD {target}");
        if target.contains("/blobs/") || target.contains("/manifests/sha256:") {
            assert!(r.body_text().contains(digest.as_str()), "{}", r.body_text());
        }
    }
    let logs = s.logs();
    for digest in &d.digests {
        assert!(logs.contains(digest), "log does not name {digest}:\n{logs}");
    }
    // What is intact is still served.
    let r = get(s.addr, "/v2/small/manifests/1.0");
    assert_eq!((r.status, &r.body), (200, &f.small.top.bytes));
}

fn replace(path: &Path, bytes: &[u8]) {
    // As the ISO-to-disk copy does it: a new file renamed over the old one.
    let tmp: PathBuf = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_blob_replaced_or_rewritten_after_its_check_is_checked_again() {
    let f = Fixture::new();
    let big = f.big_blob();
    let path = f.root().join(blob_path(&digest(big)));
    let target = format!("/v2/team/app/blobs/{}", big.digest);
    let s = TestServer::start(&[f.root()]);
    assert_eq!(get(s.addr, &target).status, 200);

    let mut bad = big.bytes.clone();
    bad[7] ^= 0x80;
    replace(&path, &bad);
    assert_eq!(get(s.addr, &target).status, 500);

    replace(&path, &big.bytes);
    let r = get(s.addr, &target);
    assert_eq!((r.status, r.body.len()), (200, big.bytes.len()));
    assert_eq!(r.body, big.bytes);

    // Rewritten in place (same inode, same size): the changed mtime/ctime gives it away.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[big.bytes[3] ^ 1], 3).unwrap();
    drop(file);
    assert_eq!(get(s.addr, &target).status, 500);
}

#[test]
fn a_tag_added_while_serving_is_served() {
    // Roots are read per request: the disk copy filling up while the node runs is seen.
    let f = Fixture::new();
    let s = TestServer::start(&[f.root()]);
    assert_eq!(get(s.addr, "/v2/small/manifests/2.0").status, 404);
    let w = imager_cache::FlatWriter::create(f.root()).unwrap();
    w.write_tag(&f.small.name, "2.0", &f.small.top.bytes)
        .unwrap();
    assert_eq!(get(s.addr, "/v2/small/manifests/2.0").status, 200);
}

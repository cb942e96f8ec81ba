//! `mke2fs -d` in the shape the metal image uses it: a directory tree into an ext4 image labelled
//! IMAGECACHE, sized as upstream sizes the partition (the files' bytes plus 20 %, whole MiB).
//! For measuring against `mke2fs -d` (docs/benchmarks.md):
//!
//! ```text
//! cargo run --release -p imager-ext4 --example mkfs -- SRC OUT [SIZE_MIB]
//! ```

// An example: a panic with its message is the error report.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::PathBuf;

use imager_ext4::{HostFiles, Options, Plan, Tree};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, out, rest @ ..] = args.as_slice() else {
        eprintln!("usage: mkfs SRC OUT [SIZE_MIB]");
        std::process::exit(2);
    };
    let src = PathBuf::from(src);
    let mut files = Vec::new();
    let mut hosts = Vec::new();
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let rel = entry.path().strip_prefix(&src).unwrap();
            files.push((
                rel.to_str().unwrap().to_owned(),
                entry.metadata().unwrap().len(),
            ));
            hosts.push(entry.path().to_owned());
        }
    }
    let tree = Tree::new(&files).unwrap();
    let size = match rest.first() {
        Some(mib) => mib.parse::<u64>().unwrap() << 20,
        None => (tree.bytes() + tree.bytes() / 5)
            .next_multiple_of(1 << 20)
            .max(tree.min_size().next_multiple_of(1 << 20)),
    };
    let unix_time = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let plan = Plan::new(
        tree,
        &Options {
            label: "IMAGECACHE".into(),
            unix_time,
            size,
        },
    )
    .unwrap();
    let file = File::create_new(out).unwrap();
    plan.write(&file, 0, &mut HostFiles::new(hosts)).unwrap();
    file.sync_all().unwrap();
    eprintln!(
        "{} files, {} bytes of file system",
        plan.files(),
        plan.size()
    );
}

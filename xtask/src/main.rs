//! Project glue, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! Each command lives in its own module; this file only dispatches.

mod assets;
mod bench;
mod demo;
mod fuzz;
mod initramfs;
mod test;
mod util;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  assets [--out DIR]     download + unpack the Debian kernel and boot loaders, build the test initramfs
  test                   prepare assets, then run every test (unit, oracle and QEMU boot tests)
  demo                   build an ISO from the built-in example cache and boot it in QEMU
  bench iso              benchmark `imager iso` against cp and xorriso
  bench cache            benchmark `imager cache create` against skopeo
  bench serve            benchmark `imager cache serve` against docker-registry
  bench push             benchmark `imager cache push` against skopeo
  bench metal            benchmark `imager metal` against cp -r and upstream's recipe
  fuzz [TARGET...]       fuzz the parsers of outside bytes for a bounded time (not part of `test`)
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next();
    let rest: Vec<String> = args.collect();
    match cmd.as_deref() {
        Some("assets") => assets::run(&rest),
        Some("test") => test::run(&rest),
        Some("demo") => demo::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("fuzz") => fuzz::run(&rest),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command {other:?}\n{USAGE}"),
    }
}

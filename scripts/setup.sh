#!/usr/bin/env bash
# Prepares a Debian 12 (bookworm) machine to build and test imager: installs the Debian packages the
# builds and tests use, then fills _assets/ with `cargo xtask assets`. Idempotent: rerun it any time,
# e.g. to pick up a new Debian kernel. Run it as root, or as a user who may sudo (then only apt runs
# as root). Downloads come from the Debian mirrors apt is configured with, and crates.io (cargo).
set -euo pipefail

cd "$(dirname "$0")/.."

packages=(
    # Boot tests: QEMU (SeaBIOS comes with it) and OVMF for UEFI; arm64 media boot in
    # qemu-system-aarch64 (package qemu-system-arm) under AAVMF (qemu-efi-aarch64).
    qemu-system-x86 ovmf qemu-system-arm qemu-efi-aarch64
    # Reference copies of the boot loaders; the assets themselves are unpacked from `apt-get download`
    # by the xtask, so they do not depend on what is installed here.
    isolinux syslinux-common systemd-boot-efi
    # Independent oracles that check what imager writes.
    xorriso genisoimage gdisk dosfstools mtools e2fsprogs
    # Initramfs tooling and inspection.
    busybox-static xz-utils zstd cpio file
    # Reading OCI layouts as skopeo writes them (crates/cache tests); the registry client's tests
    # pull from the distribution registry, with skopeo as an independent client.
    skopeo docker-registry
    # registryd's tests: containerd pulls from our server, runc runs what it pulled.
    containerd runc
    # rustc links through cc; node-init links statically against glibc (libc.a is in libc6-dev).
    gcc libc6-dev
    # `cargo xtask assets` runs grub-mkimage from the unpacked grub-common package; these are the
    # shared libraries it links against (ldd), which the unpacked tree does not bring.
    libdevmapper1.02.1 liblzma5
)

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "setup.sh: run this as root, or install sudo" >&2
    exit 1
fi

# A rustup install that is not on PATH yet (a fresh login shell would have it).
if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    # Debian 12's own cargo is too old for this workspace (edition 2024, Rust 1.95).
    echo "setup.sh: cargo not found; install Rust 1.95 or newer with rustup first" >&2
    exit 1
fi

# The CI gates (cargo fmt, cargo clippy) need these components of the toolchain; the arm64 test
# node's init is built for aarch64-unknown-linux-musl (its rust-std carries musl and its C
# runtime; rust-lld, part of the toolchain, links it).
if command -v rustup >/dev/null; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || echo "setup.sh: rustup could not add rustfmt/clippy" >&2
    rustup target add aarch64-unknown-linux-musl >/dev/null
fi

# The arm64 assets (kernel, systemd-bootaa64.efi) are Debian's arm64 packages, which apt only
# lists once it knows the architecture. Nothing arm64 is ever installed: `cargo xtask assets`
# fetches them with `apt-get download` and unpacks them with dpkg-deb.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "setup.sh: adding the arm64 architecture to apt (package lists only)"
    "${as_root[@]}" dpkg --add-architecture arm64
fi

echo "setup.sh: updating the package lists"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
echo "setup.sh: installing ${packages[*]}"
# apt-get -qq still lets dpkg list every package it unpacks; errors go to stderr, which stays.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${packages[@]}" >/dev/null

echo "setup.sh: preparing the boot assets"
cargo xtask assets

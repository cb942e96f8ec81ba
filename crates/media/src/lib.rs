//! Composes kernel, initramfs, bootloaders and an image cache into Talos-compatible boot media.

//! Deterministic newc cpio initramfs writer with xz (CRC32) or zstd compression, and modules.dep resolution.

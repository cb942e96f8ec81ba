//! Builds the test node's initramfs (node-init + kernel modules).

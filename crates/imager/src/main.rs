//! imager: bootable installer media with an image cache for air-gapped Kubernetes.

fn main() {}

//! sha256 content digests, the identity of every blob and manifest in a cache: the type is
//! `imager-oci`'s; hashing what is read is this crate's.

use std::io::{self, Read};

pub use imager_oci::digest::{Digest, DigestError, Hasher};

/// Read and hashing buffer. Large enough that syscalls do not show next to hashing (which runs at
/// about 1 GB/s with SHA-NI), small enough to be irrelevant to memory use.
pub(crate) const BUF_SIZE: usize = 1 << 20;

/// A reader that hashes what passes through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads what is left (the caller's parser may stop before the end, e.g. at a gzip trailer
    /// or tar padding) so the digest covers the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_reader_covers_what_the_consumer_left() {
        let data = b"hello, world".repeat(1000);
        let mut r = HashingReader::new(&data[..]);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        assert_eq!(r.finish().unwrap(), (Digest::of(&data), data.len() as u64));
    }
}

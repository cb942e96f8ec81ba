//! The body of a blob answer: a range of an open file, read in pieces on the server's I/O
//! threads ([`IoPool`]).
//!
//! hyper owns the socket, so `sendfile(2)` is out of reach; each piece is read once with
//! `pread` into a buffer that hyper writes out without copying again (vectored writes of the
//! `Bytes` it is handed). hyper asks for the next piece only when the previous one was written,
//! so a connection holds at most a couple of pieces whatever the blob's size or the client's
//! speed: memory stays flat under load.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::pool::IoPool;

/// Bytes read per piece. Below glibc's mmap threshold (128 KiB), so pieces are recycled from
/// the allocator's arenas instead of mapped and unmapped per piece; large enough that the
/// per-piece cost (a hop to an I/O thread and back) is small next to copying it.
pub const PIECE: usize = 64 << 10;

#[derive(Debug)]
pub struct FileBody {
    file: Arc<File>,
    pos: u64,
    end: u64,
    pool: IoPool,
    reading: Option<oneshot::Receiver<io::Result<Bytes>>>,
}

impl FileBody {
    /// The bytes `start..end` of `file`, read on `pool`.
    pub fn new(file: File, start: u64, end: u64, pool: IoPool) -> Self {
        Self {
            file: Arc::new(file),
            pos: start,
            end,
            pool,
            reading: None,
        }
    }
}

fn read_piece(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    // A file that shrank since it was checked ends the answer with an error (the client sees a
    // short body), never with other bytes.
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let reading = match &mut this.reading {
            Some(reading) => reading,
            None => {
                if this.pos >= this.end {
                    return Poll::Ready(None);
                }
                let len = (this.end - this.pos).min(PIECE as u64) as usize;
                let (file, pos) = (Arc::clone(&this.file), this.pos);
                this.reading
                    .insert(this.pool.spawn(move || read_piece(&file, pos, len)))
            }
        };
        let joined = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(joined) => joined,
        };
        this.reading = None;
        Poll::Ready(Some(match joined {
            Ok(Ok(bytes)) => {
                this.pos += bytes.len() as u64;
                Ok(Frame::data(bytes))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other(
                "the read was dropped (the I/O pool stopped)",
            )),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.reading.is_none() && self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn streams_the_range_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(PIECE * 3 + 5)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let pool = IoPool::new(2).unwrap();
        for (start, end) in [(0, data.len()), (7, PIECE * 2 + 3), (5, 5), (0, 1)] {
            let file = File::open(&p).unwrap();
            let body = FileBody::new(file, start as u64, end as u64, pool.clone());
            assert_eq!(body.size_hint().exact(), Some((end - start) as u64));
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], &data[start..end]);
        }
        // A range past the end of a file that shrank is an error, not short data.
        let body = FileBody::new(File::open(&p).unwrap(), 0, data.len() as u64 + 1, pool);
        assert!(body.collect().await.is_err());
    }
}

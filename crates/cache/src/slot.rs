//! An async writer into a fixed byte range of a file (a blob's slot in a layer being laid out),
//! for the registry client's verified, resumable blob streaming.
//!
//! The client hands its writer only new bytes, in order, whatever retries and `Range` resumes
//! happened underneath (bytes a registry repeats are skipped before they reach the writer), so the
//! writer's position is the number of bytes it accepted and a resumed download continues at the
//! right offset of the slot.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

/// Bytes gathered before each positioned write: large enough that the hop to the blocking pool is
/// amortized, small enough that `--jobs` concurrent blobs stay a few MiB.
const CHUNK: usize = 1 << 20;

/// Writes into `file` from `offset`, at most `len` bytes; a byte past the slot is an error (it
/// would overwrite the next entry's header). Writes go to tokio's blocking pool (one in flight,
/// while the next chunk fills); `flush`/`shutdown` waits until every accepted byte is written.
pub struct SlotWriter {
    file: Arc<File>,
    /// Where the buffered bytes go.
    next: u64,
    /// The slot's end.
    end: u64,
    buf: Vec<u8>,
    spare: Option<Vec<u8>>,
    pending: Option<JoinHandle<(io::Result<()>, Vec<u8>)>>,
}

impl SlotWriter {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> Self {
        Self {
            file,
            next: offset,
            end: offset + len,
            buf: Vec::with_capacity(CHUNK),
            spare: None,
            pending: None,
        }
    }

    /// Waits for the write in flight, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(handle) = &mut self.pending {
            let joined = ready!(Pin::new(handle).poll(cx));
            self.pending = None;
            let (result, spare) = joined.map_err(io::Error::other)?;
            self.spare = Some(spare);
            result?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends the buffer to be written; the caller has waited for the previous write.
    fn start(&mut self) {
        let mut data = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        data.clear();
        std::mem::swap(&mut data, &mut self.buf);
        let at = self.next;
        self.next += data.len() as u64;
        let file = self.file.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let result = file.write_all_at(&data, at);
            (result, data)
        }));
    }
}

impl AsyncWrite for SlotWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.buf.len() == CHUNK {
            ready!(this.poll_pending(cx))?;
            this.start();
        }
        let accepted = this.next + this.buf.len() as u64;
        if accepted + data.len() as u64 > this.end {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more bytes than the slot holds",
            )));
        }
        let n = data.len().min(CHUNK - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            ready!(this.poll_pending(cx))?;
            if this.buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.start();
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[test]
    fn writes_into_its_range_only() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let tmp = tempfile::tempfile().unwrap();
        tmp.set_len(10 + 3 * CHUNK as u64 + 10).unwrap();
        let file = Arc::new(tmp);
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        rt.block_on(async {
            let mut w = SlotWriter::new(file.clone(), 10, data.len() as u64);
            // Uneven pieces, as a network delivers them.
            for piece in data.chunks(70_001) {
                w.write_all(piece).await.unwrap();
            }
            w.shutdown().await.unwrap();
            let err = w.write_all(b"x").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
        let mut back = vec![0u8; data.len() + 20];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back[..10], &[0; 10]);
        assert!(back[10..10 + data.len()] == data[..]);
        assert_eq!(&back[10 + data.len()..], &[0; 10]);
    }
}

//! Answer bodies, and how a blob's bytes reach the client.
//!
//! Plain HTTP: `sendfile(2)`, page cache to socket inside the kernel, never through a buffer of
//! ours ([`send_file`]). The call runs on an I/O thread ([`IoPool`]), not on the runtime: it reads
//! the file, and a blob on a slow disk or a BMC's virtual CD would otherwise stall every
//! connection of that runtime thread. The job works on a duplicate of the socket's descriptor, so
//! a connection dropped while its job runs cannot have its descriptor number reused under it.
//!
//! TLS: the bytes must pass through rustls, so they are read with `pread` in [`PIECE`]s on the
//! I/O threads and written; the next piece is read while the previous one is written
//! ([`copy_pieces`]).
//!
//! Either way a connection holds at most two pieces (or none), whatever the blob's size or the
//! client's speed: memory stays flat under load. A client that takes nothing for
//! [`Stall`] is dropped, so stalled clients cannot pin connection slots.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::IoPool;

/// Bytes read per piece on the TLS path. Below glibc's mmap threshold (128 KiB), so pieces are
/// recycled from the allocator's arenas instead of mapped and unmapped per piece.
pub const PIECE: usize = 64 << 10;

/// The most one `sendfile` call is asked for; the socket's buffer usually takes less. Bounds how
/// long one job holds an I/O thread when the file is read from a slow disk.
const SENDFILE_MAX: usize = 4 << 20;

/// The body of an answer.
#[derive(Debug)]
pub enum Payload {
    Empty,
    Bytes(Bytes),
    /// `start..end` of an open file holding a checked blob: the blob's own file, or the ISO or
    /// layer blob it lies in (offsets are the file's, not the blob's).
    File {
        file: File,
        start: u64,
        end: u64,
    },
}

/// How long a client may take nothing before its connection is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Stall(pub Duration);

impl Stall {
    pub(crate) async fn guard<T>(self, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        tokio::time::timeout(self.0, f).await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing for too long",
            ))
        })
    }
}

/// Sends `start..end` of `file` to `stream` with `sendfile(2)`.
pub(crate) async fn send_file(
    stream: &TcpStream,
    file: File,
    start: u64,
    end: u64,
    pool: &IoPool,
    stall: Stall,
) -> io::Result<()> {
    let socket: Arc<OwnedFd> = Arc::new(stream.as_fd().try_clone_to_owned()?);
    let file = Arc::new(file);
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_MAX);
        let (s, f) = (Arc::clone(&socket), Arc::clone(&file));
        let sent = pool
            .run(move || {
                let mut offset = pos;
                rustix::fs::sendfile(&*s, &*f, Some(&mut offset), want)
            })
            .await?;
        match sent {
            // The file is shorter than it was when checked: end with an error (the client sees
            // a short body), never with other bytes.
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => pos += n as u64,
            Err(rustix::io::Errno::AGAIN) => stall.guard(writable(stream)).await?,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until the socket has room again after a `sendfile` on another thread found it full.
///
/// Tokio learns of a full socket only from a write of its own that would block; the one that
/// blocked was not its own, so its readiness may still say "writable". The check is a
/// zero-timeout `poll(2)` run inside `try_io`: if the socket is full, `try_io` clears the stale
/// readiness, with tokio's guard against clearing an event that arrived meanwhile, and the
/// next `writable()` really waits.
async fn writable(stream: &TcpStream) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let has_room = stream.try_io(Interest::WRITABLE, || {
            let mut fds = [rustix::event::PollFd::new(
                stream,
                rustix::event::PollFlags::OUT,
            )];
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero))?;
            let ready = fds[0].revents();
            if ready.intersects(rustix::event::PollFlags::ERR | rustix::event::PollFlags::HUP) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            if ready.contains(rustix::event::PollFlags::OUT) {
                Ok(())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        match has_room {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends `start..end` of `file` to `w` in [`PIECE`]s read on `pool`, reading the next piece while
/// the previous one is written.
pub(crate) async fn copy_pieces<W: AsyncWrite + Unpin>(
    w: &mut W,
    file: File,
    start: u64,
    end: u64,
    pool: &IoPool,
    stall: Stall,
) -> io::Result<()> {
    let file = Arc::new(file);
    let read = |pos: u64| {
        let file = Arc::clone(&file);
        let len = (end - pos).min(PIECE as u64) as usize;
        pool.run(move || read_piece(&file, pos, len))
    };
    let mut pos = start;
    let mut next = (pos < end).then(|| read(pos));
    while let Some(reading) = next.take() {
        let piece = reading.await??;
        pos += piece.len() as u64;
        next = (pos < end).then(|| read(pos));
        stall.guard(w.write_all(&piece)).await?;
    }
    Ok(())
}

fn read_piece(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    // A file that shrank since it was checked ends the answer with an error, as in send_file.
    file.read_exact_at(&mut buf, pos)?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    fn data_file(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        (dir, p, data)
    }

    const STALL: Stall = Stall(Duration::from_secs(10));

    #[tokio::test]
    async fn pieces_carry_the_range() {
        let (_d, p, data) = data_file(PIECE * 3 + 5);
        let pool = IoPool::new(2).unwrap();
        for (start, end) in [(0, data.len()), (7, PIECE * 2 + 3), (5, 5), (0, 1)] {
            let mut out = Vec::new();
            let file = File::open(&p).unwrap();
            copy_pieces(&mut out, file, start as u64, end as u64, &pool, STALL)
                .await
                .unwrap();
            assert_eq!(&out[..], &data[start..end]);
        }
        // A range past the end of a file that shrank is an error, not short data.
        let file = File::open(&p).unwrap();
        let mut out = Vec::new();
        let past = data.len() as u64 + 1;
        assert!(
            copy_pieces(&mut out, file, 0, past, &pool, STALL)
                .await
                .is_err()
        );
    }

    /// More than a socket buffer holds, to a reader that starts late: the sender must wait for
    /// room (the readiness dance in `writable`) and still deliver every byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sendfile_carries_the_range_through_a_full_socket() {
        let (_d, p, data) = data_file(24 << 20);
        let pool = IoPool::new(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (server, _) = listener.accept().await.unwrap();
        let (start, end) = (3u64, data.len() as u64 - 7);
        send_file(&server, File::open(&p).unwrap(), start, end, &pool, STALL)
            .await
            .unwrap();
        drop(server);
        let got = reader.await.unwrap();
        assert!(got == data[start as usize..end as usize], "bytes differ");

        // A file shorter than the range: an error.
        let (client, server) = {
            let c = TcpStream::connect(addr);
            let (a, b) = tokio::join!(c, listener.accept());
            (a.unwrap(), b.unwrap().0)
        };
        let past = data.len() as u64 + 1;
        let sender = async move {
            let r = send_file(&server, File::open(&p).unwrap(), 0, past, &pool, STALL).await;
            drop(server);
            r
        };
        let mut sink = client;
        let drain = async move {
            let mut v = Vec::new();
            let _ = sink.read_to_end(&mut v).await;
        };
        let (r, ()) = tokio::join!(sender, drain);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A client that reads nothing: the send gives up after the stall time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_client_times_out() {
        let (_d, p, _) = data_file(64 << 20);
        let pool = IoPool::new(2).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let started = std::time::Instant::now();
        let stall = Stall(Duration::from_millis(300));
        let r = send_file(&server, File::open(&p).unwrap(), 0, 64 << 20, &pool, stall).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(client);
    }
}

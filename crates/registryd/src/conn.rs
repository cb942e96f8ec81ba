//! One client connection: read a request head, answer it, and again while the connection is
//! kept alive. HTTP/1.1 framing is [`crate::http1`]'s; what the answer is, [`crate::server`]'s;
//! how a blob's bytes go out, [`crate::body`]'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{self, Payload, Stall};
use crate::http1::{self, HeadError};
use crate::idle::IdleGuard;
use crate::server::{State, handle};

/// A client has this long to send a request head, counted from the end of the previous answer
/// (or from the connection's start): slow-loris and idle keep-alive connections are closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies up to this size go out in one write with the head.
const COALESCE: usize = 64 << 10;
/// After an answer that closes the connection, unread request bytes (a refused push's body) are
/// read and dropped for at most this long, so the kernel does not answer them with a reset that
/// could destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

/// A connection's byte stream: plain TCP, which can take file bytes with `sendfile`, or TLS.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// The socket, when file bytes may go to it directly.
    fn plain(&self) -> Option<&TcpStream>;
}

impl Transport for TcpStream {
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

#[cfg(feature = "tls")]
impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn plain(&self) -> Option<&TcpStream> {
        None
    }
}

/// Serves requests on `stream` until the client closes it, breaks the protocol, times out, or
/// `shutdown` turns true (between requests: an answer in progress is finished first).
pub(crate) async fn serve<S: Transport>(
    mut stream: S,
    peer: SocketAddr,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        let deadline = Instant::now() + HEADER_TIMEOUT;
        // On the server's idle list while no byte of the next head has arrived: when every slot
        // is taken and a new client comes, the connection idle the longest is closed for it.
        let mut idle: Option<IdleGuard> = None;
        let parsed = loop {
            match http1::parse_request(&buf) {
                Ok(Some(parsed)) => break Ok(parsed),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if buf.is_empty() {
                if idle.is_none() {
                    idle = Some(state.idle.enter());
                }
            } else {
                idle = None;
            }
            let asked_to_close = async {
                match idle.as_mut() {
                    Some(guard) => {
                        let _ = (&mut guard.closed).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let read = tokio::select! {
                _ = shutdown.changed() => return,
                // Nothing of a request has arrived: closing loses the client nothing but the
                // connection, which HTTP clients reopen.
                () = asked_to_close => return,
                r = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => r,
            };
            match read {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                // Closed, reset or timed out: nothing to answer.
                _ => return,
            }
        };
        let (head, used) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = refuse(&mut stream, &e, state.stall).await;
                return;
            }
        };
        drop(idle);
        buf.drain(..used);
        let keep_alive = head.keep_alive && !head.has_body;
        let resp = handle(&state, peer, &head).await;
        let (parts, payload) = resp.into_parts();
        let mut out = http1::response_head(parts.status, &parts.headers, keep_alive, &date());
        let sent = match payload {
            Payload::Empty => state.stall.guard(stream.write_all(&out)).await,
            Payload::Bytes(bytes) if bytes.len() <= COALESCE => {
                out.extend_from_slice(&bytes);
                state.stall.guard(stream.write_all(&out)).await
            }
            Payload::Bytes(bytes) => {
                async {
                    state.stall.guard(stream.write_all(&out)).await?;
                    state.stall.guard(stream.write_all(&bytes)).await
                }
                .await
            }
            Payload::File { file, start, end } => {
                async {
                    state.stall.guard(stream.write_all(&out)).await?;
                    let pool = state.store.pool();
                    match stream.plain() {
                        Some(tcp) => {
                            body::send_file(tcp, file, start, end, pool, state.stall).await
                        }
                        None => {
                            body::copy_pieces(&mut stream, file, start, end, pool, state.stall)
                                .await
                        }
                    }
                }
                .await
            }
        };
        if sent.is_err() || state.stall.guard(stream.flush()).await.is_err() {
            return;
        }
        if !keep_alive {
            close(&mut stream).await;
            return;
        }
    }
}

/// Answers a head that could not be parsed, and closes.
async fn refuse<S: Transport>(stream: &mut S, e: &HeadError, stall: Stall) -> std::io::Result<()> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    let out = http1::response_head(e.status(), &headers, false, &date());
    stall.guard(stream.write_all(&out)).await?;
    close(stream).await;
    Ok(())
}

/// Ends the connection after its last answer: FIN (and TLS close-notify), then a short linger
/// over what the client still sends.
async fn close<S: Transport>(stream: &mut S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut chunk = [0u8; 8192];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n),
                _ => return,
            }
        }
    })
    .await;
}

fn date() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

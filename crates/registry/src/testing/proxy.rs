//! A fault-injecting HTTP/1.1 proxy in front of a test registry: forwards requests unchanged, except
//! that requests whose path contains a marker get a planned fault (an error status, a connection
//! cut mid-body, a flipped byte, a short body, a stripped Range header). Every connection carries
//! one request (`Connection: close` both ways), which keeps the byte surgery simple.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Action {
    /// Answer with this status (and an optional `Retry-After`) instead of forwarding.
    Status(u16, Option<&'static str>),
    /// Forward, but close the connection after this many body bytes.
    DropAfter(usize),
    /// Forward with the body byte at this offset flipped.
    Corrupt(usize),
    /// Forward a 200 as if the blob were this long: `Content-Length` rewritten, body cut there.
    Truncate(usize),
    /// Forward without the request's `Range` header (a registry that ignores ranges).
    StripRange,
    /// Forward this many body bytes, then go silent with the connection open (a stalled link).
    StallAfter(usize),
    /// Answer 200 with this `Content-Type` and body instead of forwarding (a registry serving
    /// something no real one would, e.g. a manifest over every size limit).
    Respond(&'static str, Vec<u8>),
    /// Forward this many bytes of the request's body, then cut both connections (an upload
    /// dropped midway).
    CutUploadAfter(usize),
}

#[derive(Debug, Clone)]
struct Fault {
    marker: String,
    remaining: usize,
    action: Action,
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub fault: Option<String>,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    seen: Vec<Seen>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    // A failed exchange is the client's to notice; the proxy just moves on.
                    let _ = handle(conn, upstream, state).await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Plans `action` for the next `times` requests whose path contains `marker`.
    pub fn inject(&self, marker: &str, times: usize, action: Action) {
        self.state.lock().expect("proxy state").faults.push(Fault {
            marker: marker.to_owned(),
            remaining: times,
            action,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("proxy state").seen.clone()
    }

    /// The requests whose path contains `marker`.
    pub fn seen_for(&self, marker: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains(marker))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads up to the end of an HTTP head; returns the head and whatever body bytes came with it.
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS ClientHello (an insecure client trying HTTPS first): answer as a plain HTTP
        // server does to bytes it cannot parse, so the client falls back at once instead of
        // waiting for its connect timeout.
        if buf.first() == Some(&0x16) {
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(None);
        }
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("head too large"));
        }
    }
}

/// The head's first line and its headers (name, value), without `Connection`.
fn split_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.eq_ignore_ascii_case("connection"))
        .collect();
    (first, headers)
}

fn join_head(first: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut s = format!("{first}\r\n");
    for (k, v) in headers {
        s += &format!("{k}: {v}\r\n");
    }
    s += "Connection: close\r\n\r\n";
    s.into_bytes()
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let Some((head, request_body)) = read_head(&mut client).await? else {
        return Ok(());
    };
    let (request_line, mut headers) = split_head(&head);
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let range = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.clone());
    let action = {
        let mut st = state.lock().expect("proxy state");
        let action = st
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && path.contains(&f.marker))
            .map(|f| {
                f.remaining -= 1;
                f.action.clone()
            });
        st.seen.push(Seen {
            path: path.clone(),
            range,
            fault: action.as_ref().map(|a| match a {
                // Not the body: it may be megabytes.
                Action::Respond(content_type, body) => {
                    format!("Respond({content_type}, {} bytes)", body.len())
                }
                other => format!("{other:?}"),
            }),
        });
        action
    };
    if let Some(Action::Status(code, retry_after)) = &action {
        let mut resp =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(ra) = retry_after {
            resp += &format!("Retry-After: {ra}\r\n");
        }
        resp += "\r\n";
        client.write_all(resp.as_bytes()).await?;
        return client.shutdown().await;
    }
    if let Some(Action::Respond(content_type, body)) = &action {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await?;
        client.write_all(body).await?;
        return client.shutdown().await;
    }
    if matches!(action, Some(Action::StripRange)) {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("range"));
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(&join_head(&request_line, &headers)).await?;
    // The request's body (uploads), by its Content-Length.
    let body_len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let cut = match action {
        Some(Action::CutUploadAfter(n)) => Some(n),
        _ => None,
    };
    let mut forwarded = 0usize;
    let mut pending = request_body;
    let mut chunk = vec![0u8; 64 << 10];
    while forwarded < body_len {
        if pending.is_empty() {
            let n = client.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            pending = chunk[..n].to_vec();
        }
        let mut take = pending.len().min(body_len - forwarded);
        if let Some(c) = cut {
            take = take.min(c.saturating_sub(forwarded));
        }
        up.write_all(&pending[..take]).await?;
        forwarded += take;
        pending.drain(..take);
        if cut.is_some_and(|c| forwarded >= c) {
            up.flush().await?;
            // Both sockets dropped: the registry sees a short body, the client a reset.
            return Ok(());
        }
    }
    let Some((resp_head, first_body)) = read_head(&mut up).await? else {
        return Ok(());
    };
    let (status_line, mut resp_headers) = split_head(&resp_head);
    let ok = status_line.split(' ').nth(1) == Some("200");
    let limit = match action {
        Some(Action::DropAfter(n) | Action::StallAfter(n)) => Some(n),
        Some(Action::Truncate(n)) if ok => {
            for (k, v) in resp_headers.iter_mut() {
                if k.eq_ignore_ascii_case("content-length") {
                    *v = n.to_string();
                }
            }
            Some(n)
        }
        _ => None,
    };
    let corrupt_at = match action {
        Some(Action::Corrupt(at)) => Some(at),
        _ => None,
    };
    client
        .write_all(&join_head(&status_line, &resp_headers))
        .await?;
    let mut sent = 0usize;
    let mut pending = first_body;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if !pending.is_empty() {
            if let Some(at) = corrupt_at
                && at >= sent
                && at < sent + pending.len()
            {
                pending[at - sent] ^= 0xff;
            }
            let take = limit.map_or(pending.len(), |l| pending.len().min(l.saturating_sub(sent)));
            client.write_all(&pending[..take]).await?;
            sent += take;
            if limit.is_some_and(|l| sent >= l) {
                client.flush().await?;
                if matches!(action, Some(Action::StallAfter(_))) {
                    // Long enough for any read timeout under test; the test ends first.
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
                // Cut: dropping both sockets ends the response short of its Content-Length.
                return Ok(());
            }
        }
        let n = up.read(&mut chunk).await?;
        if n == 0 {
            return client.shutdown().await;
        }
        pending = chunk[..n].to_vec();
    }
}

//! A closed-loop HTTP/1.1 load generator for `bench serve`: each client is a thread with one
//! keep-alive connection that sends a GET, reads the whole answer, and sends the next, for a fixed
//! time. Plain blocking sockets and a parser of the one response shape registries send (status
//! line, headers, `Content-Length` body) keep its own cost small and equal for every server it
//! measures.
//!
//! Each answer is checked for status 200 and the length the path is known to have; a wrong one
//! counts as an error (and the connection is opened anew), never as throughput.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What clients ask for: a path and the exact body length it answers with.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub len: u64,
}

/// One load run against one server.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    pub bytes: u64,
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Every completed request's time from sending to the last body byte.
    pub latencies: Vec<Duration>,
    pub window: Duration,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.window.as_secs_f64()
    }

    /// Adds `other`'s requests, bytes, errors and latencies (not its window: clients share one,
    /// runs add theirs).
    pub fn absorb(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        l[i]
    }
}

/// `clients` connections to `addr`, each going through `requests` round-robin (client `i` starting
/// at the `i`-th), for `warmup` unmeasured and then `window` measured. Only requests that complete
/// inside the window count.
pub fn run(
    addr: SocketAddr,
    accept: &str,
    requests: &[Request],
    clients: usize,
    warmup: Duration,
    window: Duration,
) -> Result<Outcome> {
    if requests.is_empty() {
        bail!("no requests to send");
    }
    let requests: Arc<[Request]> = requests.into();
    let start = Instant::now() + Duration::from_millis(20);
    let (from, to) = (start + warmup, start + warmup + window);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let requests = Arc::clone(&requests);
            let accept = accept.to_owned();
            std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn(move || client(addr, &accept, &requests, i, start, from, to))
                .context("starting a load client")
        })
        .collect::<Result<_>>()?;
    let mut total = Outcome {
        window,
        ..Outcome::default()
    };
    for t in threads {
        let o = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load client panicked"))?;
        total.absorb(o);
    }
    Ok(total)
}

fn client(
    addr: SocketAddr,
    accept: &str,
    requests: &[Request],
    first: usize,
    start: Instant,
    from: Instant,
    to: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut body = vec![0u8; 256 << 10];
    let mut conn: Option<BufReader<TcpStream>> = None;
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let mut k = first;
    while Instant::now() < to {
        let req = &requests[k % requests.len()];
        k += 1;
        let began = Instant::now();
        let result = match conn.as_mut() {
            Some(c) => exchange(c, addr, accept, req, &mut body),
            None => connect(addr).and_then(|c| {
                let c = conn.insert(c);
                exchange(c, addr, accept, req, &mut body)
            }),
        };
        let ended = Instant::now();
        match result {
            Ok(()) if began >= from && ended <= to => {
                out.requests += 1;
                out.bytes += req.len;
                out.latencies.push(ended - began);
            }
            Ok(()) => {}
            Err(e) => {
                if ended <= to {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("GET {}: {e}", req.path));
                }
                conn = None;
            }
        }
    }
    out
}

fn connect(addr: SocketAddr) -> io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(BufReader::with_capacity(64 << 10, s))
}

/// The body of one GET (status 200 and a `Content-Length` required), for finding what to load.
pub fn get(addr: SocketAddr, accept: &str, path: &str) -> Result<Vec<u8>> {
    let mut conn = connect(addr).with_context(|| format!("connecting to {addr}"))?;
    let len = send(&mut conn, addr, accept, path).with_context(|| format!("GET {path}"))?;
    let mut body = vec![0u8; usize::try_from(len)?];
    conn.read_exact(&mut body)
        .with_context(|| format!("GET {path}"))?;
    Ok(body)
}

/// One GET and its whole answer.
fn exchange(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    accept: &str,
    req: &Request,
    body: &mut [u8],
) -> io::Result<()> {
    let len = send(conn, addr, accept, &req.path)?;
    if len != req.len {
        return Err(io::Error::other(format!(
            "Content-Length {len}, expected {}",
            req.len
        )));
    }
    let mut left = req.len;
    let cap = body.len() as u64;
    while left > 0 {
        let n = conn.read(&mut body[..left.min(cap) as usize])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(())
}

/// Sends a GET and reads the answer's head; returns its `Content-Length`.
fn send(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    accept: &str,
    path: &str,
) -> io::Result<u64> {
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nUser-Agent: imager-bench\r\n\r\n",
        path
    );
    conn.get_mut().write_all(head.as_bytes())?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(io::Error::other(format!("answered {:?}", line.trim_end())));
    }
    let mut len = None;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse::<u64>().ok();
        }
    }
    len.ok_or_else(|| io::Error::other("no Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let o = Outcome {
            latencies: (1..=100).rev().map(Duration::from_millis).collect(),
            ..Outcome::default()
        };
        assert_eq!(o.quantile(0.99), Duration::from_millis(99));
        assert_eq!(o.quantile(0.5), Duration::from_millis(50));
        assert_eq!(o.quantile(1.0), Duration::from_millis(100));
    }
}

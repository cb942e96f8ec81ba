//! A read-only OCI distribution server over image caches — live flat trees (the form Talos nodes
//! read from `imagecache/`) and caches opened in place (an ISO, an OCI layout): what containerd
//! on a node booted from our media pulls from, and what serves a cache to skopeo, crane or a
//! whole air-gapped network.
//!
//! ```no_run
//! # async fn run() -> Result<(), imager_registryd::ServeError> {
//! use std::path::Path;
//! use imager_registryd::{Config, Server};
//! let config = Config::new([Path::new("/var/imagecache"), Path::new("/media/iso/imagecache")]);
//! let server = Server::bind(config).await?;
//! eprintln!("serving on http://{}", server.local_addr());
//! server.serve(std::future::pending()).await
//! # }
//! ```
//!
//! The design is in docs/registryd.md. In short: requests are parsed and validated by pure code
//! ([`route`]) before any file is touched; files are opened below a root without following any
//! link ([`fsafe`]), or found in a cache opened in place ([`Root::Cache`]: an ISO, an OCI
//! layout); roots are tried in order and only content that matches the digest asked for is
//! served ([`store`]); blobs go from the checked descriptor, at the offset they lie at, to the
//! socket with `sendfile` (through bounded pieces under TLS) on a fixed set of I/O threads
//! ([`body`], [`pool`]).
//! HTTP/1.1 framing is our own small layer ([`http1`]), because `sendfile` needs the socket.

pub mod body;
mod conn;
pub mod error;
pub mod fsafe;
pub mod http1;
mod idle;
pub mod pool;
pub mod range;
pub mod route;
mod server;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ApiError, ErrorCode};
pub use server::{ServeError, Server};

/// The address upstream's registryd listens on, on a node.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3172);

/// Where a cache served lies.
#[derive(Debug, Clone)]
pub enum Root {
    /// A live flat tree (a node's disk copy): files are opened below it without following links
    /// on every request, so files added, replaced or removed while serving are seen. Must be a
    /// directory when the server starts.
    Tree(PathBuf),
    /// A cache opened in place (an ISO, an OCI layout, or a flat tree listed once): entries are
    /// served from the file and offset they lie at (the ISO, the layer blob, the layout's blob
    /// files), with no copy. Its entries are fixed at opening; its content is checked as a tree's
    /// is. A cache whose entries lie in a compressed stream is refused at start (no random
    /// access).
    Cache(Arc<imager_cache::Cache>),
}

impl Root {
    /// The path the operator named.
    pub fn path(&self) -> &Path {
        match self {
            Self::Tree(path) => path,
            Self::Cache(cache) => cache.input(),
        }
    }
}

impl From<PathBuf> for Root {
    fn from(path: PathBuf) -> Self {
        Self::Tree(path)
    }
}

impl From<&Path> for Root {
    fn from(path: &Path) -> Self {
        Self::Tree(path.to_owned())
    }
}

impl From<imager_cache::Cache> for Root {
    fn from(cache: imager_cache::Cache) -> Self {
        Self::Cache(Arc::new(cache))
    }
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// Caches, in priority order: the first good copy wins (on a node, the disk copy before the
    /// ISO).
    pub roots: Vec<Root>,
    pub address: SocketAddr,
    /// Serve HTTPS with this certificate chain and key (PEM).
    pub tls: Option<TlsFiles>,
    /// Where damaged content, accept errors and (with `access_log`) requests are reported.
    pub log: Log,
    /// One line per request.
    pub access_log: bool,
    /// Connections served at once. When all are taken, a new client closes the connection idle
    /// the longest (one waiting for its next request) and is served at once; with none idle,
    /// it waits for one to end, and later clients wait in the listen backlog. Bounds memory:
    /// each connection holds at most a couple of 64 KiB pieces of a blob.
    pub max_connections: usize,
    /// Threads that open and read files and run `sendfile`. Bounds the I/O in flight (and the
    /// threads' memory); blob sends of all connections queue for them.
    pub io_threads: usize,
    /// A client that takes no byte of an answer for this long is disconnected, so stalled
    /// clients cannot hold connection slots.
    pub write_timeout: Duration,
}

impl Config {
    /// Defaults: [`DEFAULT_ADDRESS`], plain HTTP, log to stderr, no access log, 256
    /// connections, 8 I/O threads, a 60 s write timeout.
    pub fn new<R: Into<Root>>(roots: impl IntoIterator<Item = R>) -> Self {
        Self {
            roots: roots.into_iter().map(Into::into).collect(),
            address: DEFAULT_ADDRESS,
            tls: None,
            log: Log::stderr(),
            access_log: false,
            max_connections: 256,
            io_threads: 8,
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the server reports: one line per event. The CLI prints to stderr; tests collect.
#[derive(Clone)]
pub struct Log(Arc<dyn Fn(&str) + Send + Sync>);

impl Log {
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn stderr() -> Self {
        Self::new(|line| eprintln!("{line}"))
    }

    pub(crate) fn line(&self, line: impl AsRef<str>) {
        (self.0)(line.as_ref());
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

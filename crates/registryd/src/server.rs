//! The HTTP side: accepting connections (plain or TLS), answering each request from its
//! [`Route`], and the headers registries send.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;

use crate::body::{Payload, Stall};
use crate::conn;
use crate::error::ApiError;
use crate::http1::RequestHead;
use crate::idle::Idle;
use crate::pool::IoPool;
use crate::range::ByteRange;
use crate::route::{Page, Repo, Route, route};
use crate::store::{Store, internal};
use crate::{Config, Log, Root, TlsFiles};

#[cfg(feature = "tls")]
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown is asked for, answers in flight get this long to finish.
const GRACE: Duration = Duration::from_secs(5);

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("no image cache root given")]
    NoRoots,
    #[error("image cache root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image cache root {0} is not a directory")]
    RootNotADirectory(PathBuf),
    #[error(
        "image cache {0}: its files lie in a compressed (gzip) layer, which has no random \
         access, so it cannot be served in place; re-create it with `imager cache create` (its OCI \
         layer is uncompressed), or with `--layout flat`"
    )]
    Streamed(PathBuf),
    #[error("listening on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting the I/O threads")]
    Threads(#[source] io::Error),
    #[error(
        "HTTPS was asked for, but this build of registryd has no TLS (the `tls` feature: the \
         test node's init serves plain HTTP, as a node's registryd does)"
    )]
    #[cfg(not(feature = "tls"))]
    NoTls,
    #[cfg(feature = "tls")]
    #[error("TLS certificate file {path}")]
    TlsCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[cfg(feature = "tls")]
    #[error("TLS certificate file {0} holds no certificate")]
    TlsNoCert(PathBuf),
    #[cfg(feature = "tls")]
    #[error("TLS key file {path}")]
    TlsKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[cfg(feature = "tls")]
    #[error("TLS certificate {cert} and key {key}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

pub(crate) struct State {
    pub(crate) store: Arc<Store>,
    /// Connections waiting for a request, longest idle first.
    pub(crate) idle: Idle,
    log: Log,
    access_log: bool,
    pub(crate) stall: Stall,
}

/// A bound server: [`Server::bind`], then [`Server::serve`].
pub struct Server {
    listener: TcpListener,
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    max_connections: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the roots (a tree must be a directory; a cache must not lie in a compressed
    /// stream) and the TLS files, and binds the address. Must run inside a Tokio runtime: it
    /// starts reading the manifests' blob sizes in the background.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        if config.roots.is_empty() {
            return Err(ServeError::NoRoots);
        }
        for root in &config.roots {
            match root {
                Root::Tree(path) => {
                    let meta = std::fs::metadata(path).map_err(|source| ServeError::Root {
                        path: path.clone(),
                        source,
                    })?;
                    if !meta.is_dir() {
                        return Err(ServeError::RootNotADirectory(path.clone()));
                    }
                }
                Root::Cache(cache) if cache.is_streamed() => {
                    return Err(ServeError::Streamed(cache.input().to_owned()));
                }
                Root::Cache(_) => {}
            }
        }
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| ServeError::Bind {
                    address: config.address,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| ServeError::Bind {
            address: config.address,
            source,
        })?;
        let pool = IoPool::new(config.io_threads).map_err(ServeError::Threads)?;
        let store = Arc::new(Store::new(config.roots, pool, config.log.clone()));
        let background = Arc::clone(&store);
        tokio::task::spawn_blocking(move || background.learn_all_sizes());
        Ok(Self {
            listener,
            address,
            tls,
            state: Arc::new(State {
                store,
                idle: Idle::default(),
                log: config.log,
                access_log: config.access_log,
                stall: Stall(config.write_timeout),
            }),
            // At least one; at most what a semaphore (and `acquire_many`'s u32) can count.
            max_connections: config
                .max_connections
                .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)),
        })
    }

    /// The address bound (with the port the system picked for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Serves until `shutdown` completes, then stops accepting and gives answers in flight a
    /// few seconds to finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Self {
            listener,
            tls,
            state,
            max_connections,
            ..
        } = self;
        let (stop, stopping) = watch::channel(false);
        // Each connection holds a permit. When none is left, the client just accepted makes the
        // connection idle the longest close (it waits for nothing but its next request), so a
        // new client is answered at once; with every connection busy it waits for one to end,
        // and further clients wait in the listen backlog instead of each adding buffers.
        let permits = Arc::new(Semaphore::new(max_connections));
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        state.log.line(format!("registryd: accepting a connection: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let room = make_room(&permits, &state.idle);
                    tokio::select! {
                        () = &mut shutdown => break,
                        permit = room => match permit {
                            Some(p) => p,
                            None => break,
                        },
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            let tls = tls.clone();
            let stopping = stopping.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => conn::serve(stream, peer, state, stopping).await,
                    #[cfg(feature = "tls")]
                    Some(acceptor) => {
                        // A failed or slow handshake is the client's problem: nothing to report.
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        if let Ok(Ok(stream)) = handshake.await {
                            conn::serve(stream, peer, state, stopping).await;
                        }
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                }
            });
        }
        drop(listener);
        let _ = stop.send(true);
        // Every permit back means every connection has ended.
        let _ = tokio::time::timeout(GRACE, permits.acquire_many(max_connections as u32)).await;
        Ok(())
    }
}

/// A permit for a client that found every slot taken: the connection idle the longest is asked
/// to close, or, with none idle, the first to become idle, unless a busy one ends first. One
/// connection is closed per client. `None`: the semaphore was closed.
async fn make_room(permits: &Arc<Semaphore>, idle: &Idle) -> Option<OwnedSemaphorePermit> {
    let mut closed_one = false;
    loop {
        let went_idle = idle.went_idle();
        if !closed_one {
            closed_one = idle.close_longest();
        }
        tokio::select! {
            permit = Arc::clone(permits).acquire_owned() => return permit.ok(),
            () = went_idle, if !closed_one => {}
        }
    }
}

/// Without TLS built in there is no acceptor: asking for one is [`ServeError::NoTls`].
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsAcceptor {}

#[cfg(not(feature = "tls"))]
fn tls_acceptor(_: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    Err(ServeError::NoTls)
}

#[cfg(feature = "tls")]
fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_err = |source| ServeError::TlsCert {
        path: files.cert.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(ServeError::TlsNoCert(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| ServeError::TlsKey {
        path: files.key.clone(),
        source,
    })?;
    let tls_err = |source| ServeError::Tls {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    // ring: the provider reqwest already brings (no second crypto library in the build).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The answer to one request, with the headers every answer carries; logged if asked.
pub(crate) async fn handle(
    state: &State,
    peer: SocketAddr,
    head: &RequestHead,
) -> Response<Payload> {
    let started = Instant::now();
    let method = &head.method;
    let mut resp = match route(method, head.uri.path(), head.uri.query()) {
        Ok(r) => respond(state, r, &head.headers)
            .await
            .unwrap_or_else(|e| error_response(&e)),
        Err(e) => error_response(&e),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    if method == Method::HEAD {
        // Same status and headers (Content-Length included), no body.
        *resp.body_mut() = Payload::Empty;
    }
    if state.access_log {
        let length = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        state.log.line(format!(
            "registryd: {peer} {method} {:?} {} {length} {:.1}ms",
            head.uri.to_string(),
            resp.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        ));
    }
    resp
}

async fn respond(
    state: &State,
    route: Route,
    headers: &HeaderMap,
) -> Result<Response<Payload>, ApiError> {
    match route {
        Route::Base => Ok(full(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(b"{}"),
        )),
        Route::Health => Ok(full(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"ok\n"),
        )),
        Route::Manifest { repo, reference } => {
            let store = Arc::clone(&state.store);
            let hit = state
                .store
                .pool()
                .run(move || store.manifest(&repo, &reference))
                .await
                .map_err(internal)??;
            let mut resp = full(StatusCode::OK, &hit.media_type, Bytes::from(hit.bytes));
            digest_headers(resp.headers_mut(), &hit.digest.to_string());
            Ok(resp)
        }
        Route::Blob { digest, .. } => {
            let hit = state.store.blob(digest).await?;
            let digest = digest.to_string();
            let etag = format!("\"{digest}\"");
            // If-Range names the version a client resumes; ours never changes, but another ETag
            // (or a date: we send no Last-Modified) means the client wants the whole blob.
            let range_header = match headers.get(header::IF_RANGE) {
                Some(v) if v.as_bytes() != etag.as_bytes() => None,
                _ => headers.get(header::RANGE).map(HeaderValue::as_bytes),
            };
            let len = hit.len;
            let (status, start, end) = match ByteRange::parse(range_header, len) {
                ByteRange::Full => (StatusCode::OK, 0, len),
                ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
                ByteRange::Unsatisfiable => {
                    let mut resp = error_response(&ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        crate::error::ErrorCode::Unsupported,
                        format!("the range is outside the blob's {len} bytes"),
                    ));
                    insert(
                        resp.headers_mut(),
                        header::CONTENT_RANGE,
                        &format!("bytes */{len}"),
                    );
                    return Ok(resp);
                }
            };
            // The range is within the blob; the blob lies at `offset` of the file.
            let mut resp = Response::new(Payload::File {
                file: hit.file,
                start: hit.offset + start,
                end: hit.offset + end,
            });
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            insert(h, header::CONTENT_LENGTH, &(end - start).to_string());
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if status == StatusCode::PARTIAL_CONTENT {
                let range = format!("bytes {start}-{}/{len}", end - 1);
                insert(h, header::CONTENT_RANGE, &range);
            }
            digest_headers(h, &digest);
            Ok(resp)
        }
        Route::Tags { repo, page } => {
            let store = Arc::clone(&state.store);
            let lookup = repo.clone();
            let (name, tags) = state
                .store
                .pool()
                .run(move || store.tags(&lookup))
                .await
                .map_err(internal)??;
            let (shown, next) = paginate(&tags, &page);
            let body = serde_json::json!({"name": name.repository(), "tags": shown});
            let body = serde_json::to_vec(&body).map_err(internal)?;
            let mut resp = full(StatusCode::OK, "application/json", Bytes::from(body));
            if let (Some(last), Some(n)) = (next, page.n) {
                let link = next_link(&repo, name.repository(), n, last);
                insert(resp.headers_mut(), header::LINK, &link);
            }
            Ok(resp)
        }
    }
}

/// One page of tags (sorted, after `last`, at most `n`), and the last tag shown if more follow.
pub(crate) fn paginate<'a>(
    tags: &'a BTreeSet<String>,
    page: &Page,
) -> (Vec<&'a str>, Option<&'a str>) {
    let after = tags
        .iter()
        .filter(|t| page.last.as_ref().is_none_or(|last| *t > last));
    let limit = page.n.unwrap_or(usize::MAX);
    let mut shown: Vec<&str> = Vec::new();
    let mut more = false;
    for tag in after {
        if shown.len() == limit {
            more = true;
            break;
        }
        shown.push(tag);
    }
    let next = if more { shown.last().copied() } else { None };
    (shown, next)
}

/// The distribution API's `Link` to the next page.
fn next_link(repo: &Repo, repository: &str, n: usize, last: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("n", &n.to_string())
        .append_pair("last", last);
    let path = match repo {
        Repo::Named(name) => {
            query.append_pair("ns", name.registry());
            repository.to_owned()
        }
        Repo::Path(path) => path.clone(),
    };
    format!("</v2/{path}/tags/list?{}>; rel=\"next\"", query.finish())
}

fn digest_headers(h: &mut HeaderMap, digest: &str) {
    insert(h, CONTENT_DIGEST, digest);
    insert(h, header::ETAG, &format!("\"{digest}\""));
}

/// Header values built here are digests, numbers and media types from a parsed manifest: all
/// visible ASCII. One that is not is left out rather than sent broken.
fn insert(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn full(status: StatusCode, content_type: &str, bytes: Bytes) -> Response<Payload> {
    let len = bytes.len();
    let mut resp = Response::new(Payload::Bytes(bytes));
    *resp.status_mut() = status;
    insert(resp.headers_mut(), header::CONTENT_TYPE, content_type);
    insert(resp.headers_mut(), header::CONTENT_LENGTH, &len.to_string());
    resp
}

fn error_response(e: &ApiError) -> Response<Payload> {
    let mut resp = full(e.status, "application/json", Bytes::from(e.body()));
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use imager_oci::ImageName;

    #[test]
    fn pages_of_tags() {
        let tags: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
        let page = |n, last: Option<&str>| Page {
            n,
            last: last.map(String::from),
        };
        assert_eq!(
            paginate(&tags, &page(None, None)),
            (vec!["a", "b", "c", "d"], None)
        );
        assert_eq!(
            paginate(&tags, &page(Some(2), None)),
            (vec!["a", "b"], Some("b"))
        );
        assert_eq!(
            paginate(&tags, &page(Some(2), Some("b"))),
            (vec!["c", "d"], None)
        );
        assert_eq!(paginate(&tags, &page(Some(0), None)), (vec![], None));
        assert_eq!(
            paginate(&tags, &page(None, Some("bb"))),
            (vec!["c", "d"], None)
        );
    }

    #[test]
    fn links_keep_the_namespace() {
        let named = Repo::Named(ImageName::new("host:5000", "a/b").unwrap());
        assert_eq!(
            next_link(&named, "a/b", 2, "v1"),
            "</v2/a/b/tags/list?n=2&last=v1&ns=host%3A5000>; rel=\"next\""
        );
        let path = Repo::Path("a/b".into());
        assert_eq!(
            next_link(&path, "x/a/b", 2, "v1"),
            "</v2/a/b/tags/list?n=2&last=v1>; rel=\"next\""
        );
    }
}

//! The push side of the distribution API: blobs (HEAD first, cross-repository mount, monolithic
//! or chunked uploads resumed after a dropped connection) and manifests, byte-exact. It shares the
//! pull client's connections, authentication (a `pull,push` scope), TLS and retry budget.
//!
//! Blob bodies are read from where the bytes lie (a file, or runs of one: an ISO's extents, a
//! layer blob), never copied first, and hashed once as they pass: a chunked upload is committed
//! only when what was sent has the digest it is committed under.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};

use crate::client::{Call, Client, Ctx, Target, is_transient};
use crate::error::Error;
use crate::retry::{Backoff, is_transient_status};
use imager_oci::digest::Hasher;
use imager_oci::{Digest, ImageName, media};

/// Where a blob's bytes lie: runs `(offset, len)` of one file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSource {
    pub path: PathBuf,
    pub pieces: Vec<(u64, u64)>,
}

impl BlobSource {
    /// A whole file of `len` bytes.
    pub fn file(path: PathBuf, len: u64) -> Self {
        Self {
            path,
            pieces: vec![(0, len)],
        }
    }

    fn len(&self) -> u64 {
        self.pieces.iter().map(|p| p.1).sum()
    }
}

/// How blobs are uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// Blobs up to this size go in one PUT (two requests in all); larger ones in chunks, so that a
    /// dropped connection costs at most a chunk.
    pub monolithic_max: u64,
    pub chunk_size: u64,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            monolithic_max: 32 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// What a blob push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPushed {
    /// The repository had it already (HEAD).
    Present,
    /// Mounted from another repository of the registry: no byte sent.
    Mounted,
    /// Sent; `requests` counts the upload requests (a resumed upload has more).
    Uploaded { bytes: u64, requests: u32 },
}

/// `repository:<repo>:pull,push`
fn push_scope(repo: &ImageName) -> String {
    format!("repository:{}:pull,push", repo.repository())
}

/// Bytes read per step of a body stream.
const READ_STEP: usize = 512 << 10;

/// The hash of the bytes sent so far: a resent range is not hashed twice.
struct Sent {
    digest: Digest,
    hasher: Hasher,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Range: 0-<last>` (distribution writes it without `bytes=`) -> the next offset.
pub(crate) fn range_end(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, last) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    last.trim().parse::<u64>().ok().map(|l| l + 1)
}

/// The upload URL with `digest=` added to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!(
        "{location}{sep}digest={}",
        digest.to_string().replace(':', "%3A")
    )
}

impl Client {
    /// Whether `repo` holds blob `digest` (HEAD).
    pub async fn has_blob(
        &self,
        image: &str,
        repo: &ImageName,
        digest: &Digest,
    ) -> Result<bool, Error> {
        let ctx = Ctx {
            repo,
            image: image.to_owned(),
            what: format!("blob {digest}"),
        };
        let scope = push_scope(repo);
        let path = format!("blobs/{digest}");
        let headers = HeaderMap::new();
        let call = Call {
            method: reqwest::Method::HEAD,
            target: Target::Repo(&path),
            headers: &headers,
            body: None,
            scope: &scope,
            pass: &[StatusCode::NOT_FOUND],
            retry: true,
        };
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let resp = self.send(&ctx, &call, &mut backoff).await?;
        Ok(resp.status().is_success())
    }

    /// Pushes blob `digest` (`size` bytes at `source`) into `repo`: nothing when it is there,
    /// a mount when `mount_from` (another repository of the same registry) holds it, else an
    /// upload. `image` names the image in errors.
    pub async fn push_blob(
        &self,
        image: &str,
        repo: &ImageName,
        digest: &Digest,
        source: &BlobSource,
        mount_from: Option<&ImageName>,
        opts: &UploadOptions,
    ) -> Result<BlobPushed, Error> {
        if self.has_blob(image, repo, digest).await? {
            return Ok(BlobPushed::Present);
        }
        let ctx = Ctx {
            repo,
            image: image.to_owned(),
            what: format!("blob {digest}"),
        };
        let size = source.len();
        if let Some(p) = &self.inner.config.progress {
            p.blob_started(digest, Some(size));
        }
        let mut first_location = None;
        if let Some(from) = mount_from.filter(|f| f.repository() != repo.repository()) {
            let scope = format!("{} repository:{}:pull", push_scope(repo), from.repository());
            let path = format!(
                "blobs/uploads/?mount={}&from={}",
                digest.to_string().replace(':', "%3A"),
                from.repository()
            );
            let resp = self.post_upload(&ctx, &scope, &path).await?;
            if resp.0 == StatusCode::CREATED {
                if let Some(p) = &self.inner.config.progress {
                    p.blob_finished(digest, false);
                }
                return Ok(BlobPushed::Mounted);
            }
            // 202: the registry could not mount and opened an upload instead.
            first_location = resp.1;
        }
        let pushed = self
            .upload(&ctx, digest, source, size, opts, first_location)
            .await?;
        if let Some(p) = &self.inner.config.progress {
            p.blob_finished(digest, true);
        }
        Ok(pushed)
    }

    /// POST to `path` under the repository: (status, Location).
    async fn post_upload(
        &self,
        ctx: &Ctx<'_>,
        scope: &str,
        path: &str,
    ) -> Result<(StatusCode, Option<String>), Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let call = Call {
            method: reqwest::Method::POST,
            target: Target::Repo(path),
            headers: &headers,
            body: None,
            scope,
            pass: &[],
            retry: true,
        };
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let resp = self.send(ctx, &call, &mut backoff).await?;
        let status = resp.status();
        let location = location(&resp);
        if status == StatusCode::ACCEPTED && location.is_none() {
            return Err(self.protocol(ctx, "an upload was opened without a Location"));
        }
        Ok((status, location))
    }

    fn protocol(&self, ctx: &Ctx<'_>, reason: &str) -> Error {
        Error::Protocol {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Uploads a blob: one PUT for small ones, PATCH chunks then a PUT for the others. A chunk cut
    /// short is resumed where the registry says the upload stands (GET on the upload); an upload
    /// the registry forgot, or a failed monolithic PUT, starts over.
    async fn upload(
        &self,
        ctx: &Ctx<'_>,
        digest: &Digest,
        source: &BlobSource,
        size: u64,
        opts: &UploadOptions,
        mut location: Option<String>,
    ) -> Result<BlobPushed, Error> {
        let scope = push_scope(ctx.repo);
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let mut requests = 0u32;
        'session: loop {
            let mut loc = match location.take() {
                Some(l) => l,
                None => {
                    requests += 1;
                    let (_, l) = self.post_upload(ctx, &scope, "blobs/uploads/").await?;
                    l.ok_or_else(|| self.protocol(ctx, "an upload was opened without a Location"))?
                }
            };
            let sent = Arc::new(Mutex::new(Sent {
                digest: *digest,
                hasher: Hasher::default(),
            }));
            if size <= opts.monolithic_max {
                requests += 1;
                let url = with_digest(&loc, digest);
                match self
                    .send_range(
                        ctx,
                        &scope,
                        reqwest::Method::PUT,
                        &url,
                        source,
                        0,
                        size,
                        &sent,
                        &mut backoff,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if retryable(&e) => {
                        self.wait_or_give_up(ctx, e, None, &mut backoff).await?;
                        continue 'session;
                    }
                    Err(e) => return Err(self.explain_digest(ctx, digest, &sent, size, e)),
                }
                self.check_sent(ctx, digest, &sent, size)?;
                return Ok(BlobPushed::Uploaded {
                    bytes: size,
                    requests,
                });
            }
            let mut offset = 0u64;
            while offset < size {
                let end = (offset + opts.chunk_size).min(size);
                requests += 1;
                match self
                    .send_range(
                        ctx,
                        &scope,
                        reqwest::Method::PATCH,
                        &loc,
                        source,
                        offset,
                        end,
                        &sent,
                        &mut backoff,
                    )
                    .await
                {
                    Ok(resp) => {
                        let (status, next, stands) = resp;
                        if status != StatusCode::ACCEPTED {
                            return Err(self.protocol(
                                ctx,
                                &format!("HTTP {status} for an upload chunk (202 expected)"),
                            ));
                        }
                        if let Some(n) = next {
                            loc = n;
                        }
                        offset = stands.unwrap_or(end);
                        backoff.progressed();
                    }
                    Err(e) if retryable(&e) => {
                        self.wait_or_give_up(ctx, e, None, &mut backoff).await?;
                        // Where does the upload stand?
                        match self.upload_status(ctx, &scope, &loc).await? {
                            Some((next, stands)) => {
                                if let Some(n) = next {
                                    loc = n;
                                }
                                if stands > offset {
                                    backoff.progressed();
                                }
                                offset = stands;
                            }
                            None => continue 'session,
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            self.check_sent(ctx, digest, &sent, size)?;
            requests += 1;
            let url = with_digest(&loc, digest);
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            let call = Call {
                method: reqwest::Method::PUT,
                target: Target::Location(&url),
                headers: &headers,
                body: None,
                scope: &scope,
                pass: &[],
                retry: true,
            };
            self.send(ctx, &call, &mut backoff).await?;
            return Ok(BlobPushed::Uploaded {
                bytes: size,
                requests,
            });
        }
    }

    /// GET on an upload: `Some((new location, next offset))`, or `None` when the registry no
    /// longer knows it.
    async fn upload_status(
        &self,
        ctx: &Ctx<'_>,
        scope: &str,
        loc: &str,
    ) -> Result<Option<(Option<String>, u64)>, Error> {
        let headers = HeaderMap::new();
        let call = Call {
            method: reqwest::Method::GET,
            target: Target::Location(loc),
            headers: &headers,
            body: None,
            scope,
            pass: &[StatusCode::NOT_FOUND],
            retry: true,
        };
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let resp = self.send(ctx, &call, &mut backoff).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let stands = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(range_end)
            .unwrap_or(0);
        Ok(Some((location(&resp), stands)))
    }

    /// Sends bytes `[start, end)` of the blob to `url` (one attempt: the caller resumes).
    /// Returns (status, new Location, where the upload stands per `Range`).
    #[allow(clippy::too_many_arguments)]
    async fn send_range(
        &self,
        ctx: &Ctx<'_>,
        scope: &str,
        method: reqwest::Method,
        url: &str,
        source: &BlobSource,
        start: u64,
        end: u64,
        sent: &Arc<Mutex<Sent>>,
        backoff: &mut Backoff,
    ) -> Result<(StatusCode, Option<String>, Option<u64>), Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        if method == reqwest::Method::PATCH {
            let range = HeaderValue::from_str(&format!("{start}-{}", end.saturating_sub(1)))
                .map_err(|e| self.protocol(ctx, &format!("Content-Range: {e}")))?;
            headers.insert(header::CONTENT_RANGE, range);
        }
        let progress = self.inner.config.progress.clone();
        let make_body = || -> Result<reqwest::Body, Error> {
            let file = File::open(&source.path).map_err(|e| Error::Source {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                path: source.path.clone(),
                source: e,
            })?;
            Ok(body(
                Arc::new(file),
                source.pieces.clone(),
                start,
                end,
                sent.clone(),
                progress.clone(),
            ))
        };
        let call = Call {
            method,
            target: Target::Location(url),
            headers: &headers,
            body: Some(&make_body),
            scope,
            pass: &[],
            retry: false,
        };
        let resp = self.send(ctx, &call, backoff).await?;
        let stands = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(range_end);
        Ok((resp.status(), location(&resp), stands))
    }

    fn check_sent(
        &self,
        ctx: &Ctx<'_>,
        digest: &Digest,
        sent: &Arc<Mutex<Sent>>,
        size: u64,
    ) -> Result<(), Error> {
        let hasher = std::mem::take(&mut lock(sent).hasher);
        let (actual, len) = hasher.finish();
        if len != size {
            return Err(Error::SizeMismatch {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                expected: size,
                actual: len,
            });
        }
        if actual != *digest {
            return Err(Error::DigestMismatch {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                expected: Box::new(*digest),
                actual: Box::new(actual),
                claimed_by: "the cache",
            });
        }
        Ok(())
    }

    /// A refused monolithic PUT of a blob whose bytes are not what the cache says: that is the
    /// cause worth reporting, not the registry's DIGEST_INVALID.
    fn explain_digest(
        &self,
        ctx: &Ctx<'_>,
        digest: &Digest,
        sent: &Arc<Mutex<Sent>>,
        size: u64,
        e: Error,
    ) -> Error {
        // Read apart from the check, which takes the lock itself.
        let complete = lock(sent).hasher.len() == size;
        if complete && let Err(mismatch) = self.check_sent(ctx, digest, sent, size) {
            return mismatch;
        }
        e
    }

    /// Stores a manifest under `reference` (a digest or a tag), byte-exact, with its media type.
    pub async fn put_manifest(
        &self,
        image: &str,
        repo: &ImageName,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let ctx = Ctx {
            repo,
            image: image.to_owned(),
            what: format!("manifest {reference}"),
        };
        let scope = push_scope(repo);
        let path = format!("manifests/{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|e| self.protocol(&ctx, &format!("media type {media_type:?}: {e}")))?,
        );
        let body = bytes.to_vec();
        let make_body = move || -> Result<reqwest::Body, Error> { Ok(body.clone().into()) };
        let call = Call {
            method: reqwest::Method::PUT,
            target: Target::Repo(&path),
            headers: &headers,
            body: Some(&make_body),
            scope: &scope,
            pass: &[],
            retry: true,
        };
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let resp = self.send(&ctx, &call, &mut backoff).await?;
        let expected = Digest::of(bytes);
        if let Some(announced) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok())
            && announced != expected
        {
            return Err(Error::DigestMismatch {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                expected: Box::new(expected),
                actual: Box::new(announced),
                claimed_by: "the registry's Docker-Content-Digest",
            });
        }
        Ok(())
    }

    /// The digest `reference` (a tag or digest) resolves to in `repo`, or `None` (HEAD).
    pub async fn manifest_digest(
        &self,
        image: &str,
        repo: &ImageName,
        reference: &str,
    ) -> Result<Option<Digest>, Error> {
        let ctx = Ctx {
            repo,
            image: image.to_owned(),
            what: format!("manifest {reference}"),
        };
        let scope = push_scope(repo);
        let path = format!("manifests/{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(media::MANIFEST_ACCEPT),
        );
        let call = Call {
            method: reqwest::Method::HEAD,
            target: Target::Repo(&path),
            headers: &headers,
            body: None,
            scope: &scope,
            pass: &[StatusCode::NOT_FOUND],
            retry: true,
        };
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let resp = self.send(&ctx, &call, &mut backoff).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok()))
    }
}

fn location(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether an upload attempt's failure may go away by resuming.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Transport { source, .. } => is_transient(source),
        Error::Status { status, .. } => is_transient_status(*status),
        _ => false,
    }
}

/// The blob's bytes `[start, end)`, read from `pieces` of `file` as the request streams, hashed
/// past what was hashed before (a resent range is hashed once).
fn body(
    file: Arc<File>,
    pieces: Vec<(u64, u64)>,
    start: u64,
    end: u64,
    sent: Arc<Mutex<Sent>>,
    progress: Option<Arc<dyn crate::Progress>>,
) -> reqwest::Body {
    let stream = futures_util::stream::unfold(start, move |pos| {
        let file = file.clone();
        let pieces = pieces.clone();
        let sent = sent.clone();
        let progress = progress.clone();
        async move {
            if pos >= end {
                return None;
            }
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(READ_STEP);
            let read = tokio::task::spawn_blocking(move || read_blob_at(&file, &pieces, pos, want))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            let bytes = match read {
                Ok(b) if b.is_empty() => {
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the blob's file is shorter than its size",
                        )),
                        end,
                    ));
                }
                Ok(b) => b,
                Err(e) => return Some((Err(e), end)),
            };
            let next = pos + bytes.len() as u64;
            let digest = {
                let mut s = lock(&sent);
                let hashed = s.hasher.len();
                if next > hashed && pos <= hashed {
                    let skip = usize::try_from(hashed - pos).unwrap_or(0);
                    s.hasher.update(&bytes[skip..]);
                }
                s.digest
            };
            if let Some(p) = &progress {
                p.blob_advanced(&digest, next);
            }
            Some((Ok(bytes), next))
        }
    });
    reqwest::Body::wrap_stream(stream)
}

/// Up to `want` bytes of the blob from blob offset `pos`, across its pieces.
fn read_blob_at(
    file: &File,
    pieces: &[(u64, u64)],
    pos: u64,
    want: usize,
) -> std::io::Result<Vec<u8>> {
    let mut base = 0u64;
    for &(offset, len) in pieces {
        if pos < base + len {
            let within = pos - base;
            let n = usize::try_from(len - within)
                .unwrap_or(usize::MAX)
                .min(want);
            let mut buf = vec![0u8; n];
            let mut got = 0;
            while got < n {
                let r = file.read_at(&mut buf[got..], offset + within + got as u64)?;
                if r == 0 {
                    break;
                }
                got += r;
            }
            buf.truncate(got);
            return Ok(buf);
        }
        base += len;
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_urls() {
        assert_eq!(range_end("0-1023"), Some(1024));
        assert_eq!(range_end("bytes=0-9"), Some(10));
        assert_eq!(range_end("5-9"), None);
        assert_eq!(range_end("junk"), None);
        let d = Digest::of(b"x");
        assert_eq!(
            with_digest("/v2/a/blobs/uploads/u?_state=s", &d),
            format!("/v2/a/blobs/uploads/u?_state=s&digest=sha256%3A{}", d.hex())
        );
        assert!(with_digest("/u", &d).starts_with("/u?digest="));
    }

    #[test]
    fn pieces_are_read_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        let file = File::open(&path).expect("open");
        let pieces = [(6, 2), (1, 3)];
        assert_eq!(read_blob_at(&file, &pieces, 0, 10).expect("read"), b"67");
        assert_eq!(read_blob_at(&file, &pieces, 1, 10).expect("read"), b"7");
        assert_eq!(read_blob_at(&file, &pieces, 2, 2).expect("read"), b"12");
        assert_eq!(read_blob_at(&file, &pieces, 5, 2).expect("read"), b"");
    }
}

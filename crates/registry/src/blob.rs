//! Blobs: streamed to disk (or any writer) while hashed, verified before they get their final name,
//! resumed with `Range` after a dropped connection, fetched concurrently.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::client::{Client, Ctx, by};
use crate::error::Error;
use crate::retry::Backoff;
use imager_oci::{Digest, ImageName};

/// The staged name of a blob being fetched, beside its destination.
pub const BLOB_TEMP_PREFIX: &str = ".tmp-blob-";

/// One blob to fetch into a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRequest {
    pub repository: ImageName,
    pub digest: Digest,
    /// The descriptor's size; checked as the blob streams. `None` skips the size check (the digest
    /// is still verified).
    pub size: Option<u64>,
    pub dest: PathBuf,
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobOutcome {
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
    /// False when a verified copy was already in place (a resumed run).
    pub downloaded: bool,
}

/// Buffer between the network and the file: large enough that the blocking-pool hop of each file
/// write is amortized, small enough that N concurrent blobs stay a few MiB.
const WRITE_BUFFER: usize = 1 << 20;

/// `Content-Range: bytes <start>-<end>/<total|*>` -> start.
fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, _total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    (start <= end).then_some(start)
}

impl Client {
    /// Streams blob `digest` of `repo` into `writer`, hashing as it goes; returns its length.
    ///
    /// Size (when given) is enforced as bytes arrive and the digest is checked at the end; on any
    /// error the writer may hold a partial or wrong blob, so the caller must discard what it wrote
    /// ([`Client::get_blob`] does this with a temporary file). A connection dropped mid-blob is
    /// resumed with `Range: bytes=<received>-`; a registry that ignores the range sends the whole
    /// blob again and the part already received is skipped, so the hash stays correct either way.
    pub async fn get_blob_to_writer<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        repo: &ImageName,
        digest: &Digest,
        size: Option<u64>,
        writer: &mut W,
    ) -> Result<u64, Error> {
        self.stream_blob(repo, digest, size, writer, "the output")
            .await
    }

    /// [`Client::get_blob_to_writer`], with `target` naming the writer in errors.
    async fn stream_blob<W: AsyncWrite + Unpin + ?Sized>(
        &self,
        repo: &ImageName,
        digest: &Digest,
        size: Option<u64>,
        writer: &mut W,
        target: &str,
    ) -> Result<u64, Error> {
        let ctx = Ctx {
            repo,
            image: repo.to_string(),
            what: format!("blob {digest}"),
        };
        let progress = self.inner.config.progress.clone();
        let size_error = |actual| Error::SizeMismatch {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            expected: size.unwrap_or_default(),
            actual,
        };
        let protocol = |reason: String| Error::Protocol {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            reason,
        };
        let path = format!("blobs/{digest}");
        let mut hasher = imager_oci::digest::Hasher::default();
        let mut written: u64 = 0;
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        loop {
            let mut headers = HeaderMap::new();
            if written > 0 {
                let range = HeaderValue::from_str(&format!("bytes={written}-"))
                    .map_err(|e| protocol(format!("cannot build a Range header: {e}")))?;
                headers.insert(header::RANGE, range);
            }
            let resp = self.request(&ctx, &path, &headers, &mut backoff).await?;
            let url = resp.url().to_string();
            // How much of this response repeats bytes we already have.
            let mut skip = match resp.status() {
                StatusCode::OK => {
                    if let (Some(expected), Some(len)) = (size, resp.content_length())
                        && len != expected
                    {
                        // A registry announcing the wrong length is not going to get better.
                        return Err(size_error(len));
                    }
                    written
                }
                StatusCode::PARTIAL_CONTENT if written > 0 => {
                    let start = resp
                        .headers()
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range_start)
                        .ok_or_else(|| {
                            protocol("a 206 answer without a valid Content-Range".into())
                        })?;
                    if start > written {
                        return Err(protocol(format!(
                            "asked for bytes from {written}, the registry sent from {start}"
                        )));
                    }
                    written - start
                }
                s => {
                    return Err(protocol(format!("unexpected HTTP {s} for a blob download")));
                }
            };
            let mut stream = resp.bytes_stream();
            let mut progressed = false;
            let mut answered = false;
            let failure = loop {
                // Until this attempt's first byte, it is bounded by the streak's budget; once
                // bytes flow, only a stall (the read timeout) ends it: a large blob on a slow link
                // may take as long as it takes.
                let next = if answered {
                    stream.next().await
                } else {
                    match by(backoff.deadline(), stream.next()).await {
                        Some(next) => next,
                        None => return Err(self.out_of_time(&ctx, &url, &mut backoff)),
                    }
                };
                let chunk = match next {
                    None => break None,
                    Some(Err(e)) => break Some(e),
                    Some(Ok(chunk)) => chunk,
                };
                // Bytes we already have (a registry ignoring Range) count too: it is answering.
                answered = true;
                let mut data: &[u8] = &chunk;
                if skip > 0 {
                    let n = usize::try_from(skip).unwrap_or(usize::MAX).min(data.len());
                    data = &data[n..];
                    skip -= n as u64;
                }
                if data.is_empty() {
                    continue;
                }
                let total = written + data.len() as u64;
                if let Some(expected) = size
                    && total > expected
                {
                    // Refused before it is written: a registry cannot make us store more than the
                    // descriptor promised.
                    return Err(size_error(total));
                }
                hasher.update(data);
                writer
                    .write_all(data)
                    .await
                    .map_err(|source| Error::Write {
                        image: ctx.image.clone(),
                        what: ctx.what.clone(),
                        target: target.to_owned(),
                        source,
                    })?;
                written = total;
                progressed = true;
                if let Some(p) = &progress {
                    p.blob_advanced(digest, written);
                }
            };
            match failure {
                None if skip > 0 => {
                    // A full answer shorter than what we had already received.
                    return Err(size_error(written - skip));
                }
                None => break,
                Some(e) => {
                    if progressed {
                        backoff.progressed();
                    }
                    self.transport_failure(&ctx, &url, e, &mut backoff).await?;
                }
            }
        }
        if let Some(expected) = size
            && written != expected
        {
            return Err(size_error(written));
        }
        let (actual, _) = hasher.finish();
        if actual != *digest {
            return Err(Error::DigestMismatch {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                expected: Box::new(*digest),
                actual: Box::new(actual),
                claimed_by: "the manifest",
            });
        }
        Ok(written)
    }

    /// Fetches a blob into `dest`, verified: it is written to `.tmp-blob-<random>` in the same
    /// directory and renamed to `dest` only once its size and digest are right, so nothing partial
    /// or wrong ever carries the final name (an error or a cancelled future removes the temporary
    /// file). The temp is staged (`imager-staging`): locked while it is written, so a later fetch
    /// into the directory removes those a killed process left, and removed on SIGINT/SIGTERM. When
    /// `dest` already holds the right content (re-hashed, not trusted), nothing is downloaded.
    pub async fn get_blob(
        &self,
        repo: &ImageName,
        digest: &Digest,
        size: Option<u64>,
        dest: &Path,
    ) -> Result<BlobOutcome, Error> {
        let image = repo.to_string();
        let what = format!("blob {digest}");
        let write_err = |target: &Path, source| Error::Write {
            image: image.clone(),
            what: what.clone(),
            target: target.display().to_string(),
            source,
        };
        if let Some(len) = verified_copy(dest, digest, size)
            .await
            .map_err(|e| write_err(dest, e))?
        {
            if let Some(p) = &self.inner.config.progress {
                p.blob_finished(digest, false);
            }
            return Ok(BlobOutcome {
                digest: *digest,
                path: dest.to_owned(),
                size: len,
                downloaded: false,
            });
        }
        let dir = match (dest.parent(), dest.file_name()) {
            (Some(dir), Some(_)) => {
                if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                }
            }
            _ => {
                return Err(write_err(
                    dest,
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
                ));
            }
        };
        // One kind for every blob, so that the sweep finds whatever blob a killed run was on.
        // Cache files are world-readable like any other. (Blocking, but a create and a lock.)
        let temp = imager_staging::StagedFile::create(dir, BLOB_TEMP_PREFIX, 0o644)
            .map_err(|e| write_err(dir, e))?;
        // A second descriptor of the same open file: the lock stays with `temp`.
        let file = temp
            .file()
            .try_clone()
            .map_err(|e| write_err(temp.path(), e))?;
        let temp_path = temp.path().to_owned();
        if let Some(p) = &self.inner.config.progress {
            p.blob_started(digest, size);
        }
        let mut out =
            tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
        let target = temp_path.display().to_string();
        let len = self
            .stream_blob(repo, digest, size, &mut out, &target)
            .await?;
        out.flush().await.map_err(|e| write_err(&temp_path, e))?;
        // Close before the rename so no write of ours can land after the file is public.
        drop(out);
        temp.persist(dest).map_err(|e| write_err(dest, e))?;
        if let Some(p) = &self.inner.config.progress {
            p.blob_finished(digest, true);
        }
        Ok(BlobOutcome {
            digest: *digest,
            path: dest.to_owned(),
            size: len,
            downloaded: true,
        })
    }

    /// Fetches blobs with at most `jobs` downloads in flight, each distinct digest once (the first
    /// request for a digest decides its destination). Returns one outcome per distinct digest, in
    /// request order. The first failure cancels the rest (their temporary files are removed) and is
    /// returned.
    pub async fn fetch_blobs(
        &self,
        requests: impl IntoIterator<Item = BlobRequest>,
        jobs: usize,
    ) -> Result<Vec<BlobOutcome>, Error> {
        self.fetch_blobs_detailed(requests, jobs)
            .await
            .map_err(|failed| failed.error)
    }

    /// [`Client::fetch_blobs`], whose error also gives the request that failed: a caller that
    /// fetched the blobs of many images can then say which image and which layer it was.
    pub async fn fetch_blobs_detailed(
        &self,
        requests: impl IntoIterator<Item = BlobRequest>,
        jobs: usize,
    ) -> Result<Vec<BlobOutcome>, Box<FailedBlob>> {
        let mut seen = HashSet::new();
        let unique: Vec<BlobRequest> = requests
            .into_iter()
            .filter(|r| seen.insert(r.digest))
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, req) in unique.into_iter().enumerate() {
            let client = self.clone();
            let limit = limit.clone();
            // Spawned (not just polled together) so that hashing and copying of several blobs run
            // on all the runtime's threads.
            tasks.spawn(async move {
                // The semaphore is never closed, so acquiring only waits.
                let _permit = limit.acquire_owned().await;
                let outcome = client
                    .get_blob(&req.repository, &req.digest, req.size, &req.dest)
                    .await;
                (i, req, outcome)
            });
        }
        let mut outcomes = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, _, Ok(outcome))) => outcomes.push((i, outcome)),
                Ok((_, request, Err(error))) => {
                    // Abort is asynchronous: wait until every other download is really gone (its
                    // temporary file removed) so the caller never sees a leftover.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(Box::new(FailedBlob { request, error }));
                }
                Err(join) => match join.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only abort() cancels, and nothing here calls it while joining.
                    Err(_) => continue,
                },
            }
        }
        outcomes.sort_by_key(|(i, _)| *i);
        Ok(outcomes.into_iter().map(|(_, o)| o).collect())
    }
}

/// The blob download that made [`Client::fetch_blobs_detailed`] fail, and why (`error` already
/// names the repository and the digest).
#[derive(Debug)]
pub struct FailedBlob {
    pub request: BlobRequest,
    pub error: Error,
}

/// The length of `dest` if it exists and holds exactly `digest` (and `size`), else `None`.
/// Re-hashed rather than trusted: a file torn by a crash (the blobs are not fsynced) or edited by
/// hand is downloaded again.
async fn verified_copy(
    dest: &Path,
    digest: &Digest,
    size: Option<u64>,
) -> Result<Option<u64>, std::io::Error> {
    let dest = dest.to_owned();
    let digest = *digest;
    let check = move || -> Result<Option<u64>, std::io::Error> {
        let mut file = match std::fs::File::open(&dest) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if size.is_some_and(|s| s != len) {
            return Ok(None);
        }
        let mut hasher = imager_oci::digest::Hasher::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok((hasher.finish().0 == digest).then_some(len))
    };
    tokio::task::spawn_blocking(check)
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start(" bytes 5-9/10 "), Some(5));
        for bad in [
            "",
            "bytes */200",
            "bytes 9-5/10",
            "items 0-1/2",
            "bytes 1-2",
            "bytes a-2/3",
        ] {
            assert_eq!(content_range_start(bad), None, "{bad:?}");
        }
    }
}

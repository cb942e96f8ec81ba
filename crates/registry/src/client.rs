//! The HTTP side: connection settings, the authentication dance, retries, and manifests.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};

use crate::auth::{self, Challenge, Credentials};
use crate::docker_config::{self, DockerConfig, Lookup};
use crate::error::Error;
use crate::retry::{Backoff, RetryPolicy, is_transient_status, parse_retry_after};
use imager_oci::manifest::{self, ManifestKind};
use imager_oci::media;
use imager_oci::reference::is_docker_hub;
use imager_oci::{Digest, ImageName, Reference};

/// Where credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DockerConfigSource {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (missing: anonymous).
    #[default]
    Default,
    /// This file (missing: anonymous).
    File(PathBuf),
    /// Always anonymous.
    None,
}

/// Observes transfers, e.g. to draw progress bars. Every method has an empty default.
pub trait Progress: Send + Sync {
    /// A blob download starts (not called for blobs already present).
    fn blob_started(&self, _digest: &Digest, _size: Option<u64>) {}
    /// `total` bytes of the blob are now received and verified-so-far (hashed and written).
    fn blob_advanced(&self, _digest: &Digest, _total: u64) {}
    /// The blob is complete: verified, and in place when written to a path.
    fn blob_finished(&self, _digest: &Digest, _downloaded: bool) {}
    /// A transient failure; the next attempt starts after `wait`.
    fn retrying(&self, _image: &str, _what: &str, _attempt: u32, _wait: Duration, _cause: &str) {}
}

/// How the client connects and behaves.
#[derive(Clone)]
pub struct ClientConfig {
    /// Allow plain HTTP and unverified TLS (talosctl's `--insecure`): HTTPS is tried first, then
    /// HTTP if the TLS connection cannot be made; certificates are not checked.
    pub insecure: bool,
    /// Extra trusted CA certificates (PEM, one or more), on top of the system and Mozilla roots.
    pub ca_bundle: Option<PathBuf>,
    pub docker_config: DockerConfigSource,
    /// Searched before `$PATH` for `docker-credential-*` helpers.
    pub credential_helper_path: Option<OsString>,
    pub credential_helper_timeout: Duration,
    pub retry: RetryPolicy,
    /// Manifests and indexes larger than this are refused (real ones are a few KiB; the cap stops a
    /// hostile or broken registry from filling memory, since a manifest is held whole).
    pub max_manifest_size: u64,
    pub connect_timeout: Duration,
    /// A read that waits longer than this counts as a dropped connection (and is retried).
    pub read_timeout: Duration,
    pub user_agent: String,
    pub progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("insecure", &self.insecure)
            .field("ca_bundle", &self.ca_bundle)
            .field("docker_config", &self.docker_config)
            .field("credential_helper_path", &self.credential_helper_path)
            .field("retry", &self.retry)
            .field("max_manifest_size", &self.max_manifest_size)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// The default manifest cap: 4 MiB, the limit containerd and the distribution registry also use.
pub const DEFAULT_MAX_MANIFEST_SIZE: u64 = imager_oci::MAX_MANIFEST_SIZE;

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure: false,
            ca_bundle: None,
            docker_config: DockerConfigSource::Default,
            credential_helper_path: None,
            credential_helper_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("imager/", env!("CARGO_PKG_VERSION")).to_owned(),
            progress: None,
        }
    }
}

/// A manifest exactly as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bytes as served: never re-serialize them, their sha256 is their identity.
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// The sha256 of `bytes`, checked against the reference's digest and `Docker-Content-Digest`.
    pub digest: Digest,
}

impl Manifest {
    pub fn kind(&self) -> ManifestKind {
        // `get_manifest` only returns known media types.
        ManifestKind::of(&self.media_type).unwrap_or(ManifestKind::Image)
    }
}

/// A registry client. Cheap to clone (shared state: connections, tokens, credentials).
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) config: ClientConfig,
    docker_config: DockerConfig,
    registries: Mutex<HashMap<String, Arc<RegistryState>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What we learnt about one registry.
#[derive(Default)]
struct RegistryState {
    /// `https` or `http` once a connection worked; until then HTTPS is tried first.
    scheme: Mutex<Option<&'static str>>,
    /// The scheme the registry asked for in its last challenge.
    auth: Mutex<AuthScheme>,
    /// Looked up once, on the first challenge (anonymous registries never run a helper).
    credentials: tokio::sync::OnceCell<Option<Credentials>>,
    /// Bearer tokens per scope; the async mutex makes concurrent requests share one token fetch.
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
}

#[derive(Debug, Clone, Default)]
enum AuthScheme {
    #[default]
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    expires: Instant,
}

/// What was sent with a request, to tell "needs auth" from "auth refused" on a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    Basic,
    CachedToken,
    FreshToken,
}

/// Who and what a request is for, for error messages.
pub(crate) struct Ctx<'a> {
    pub(crate) repo: &'a ImageName,
    pub(crate) image: String,
    pub(crate) what: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (plain inserts), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a transport error may go away on retry: timeouts, refused or reset connections, bodies
/// cut short. TLS failures (bad certificate, wrong protocol) are not: they surface as an
/// `InvalidData` I/O error from the TLS layer and retrying cannot fix them.
pub(crate) fn is_transient(e: &reqwest::Error) -> bool {
    if e.is_builder() || e.is_redirect() || e.is_status() {
        return false;
    }
    if is_tls_failure(e) {
        return false;
    }
    e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode()
}

fn is_tls_failure(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            // `io::Error::source` skips the error it wraps (it returns that error's source), and
            // hyper wraps the TLS layer's InvalidData error in another io::Error: look inside.
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner),
                None => c.source(),
            },
            None => c.source(),
        };
    }
    false
}

/// The error chain of `e` on one line, for progress messages.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .danger_accept_invalid_certs(config.insecure);
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|source| Error::CaBundle {
                path: path.clone(),
                source,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                Error::CaBundleParse {
                    path: path.clone(),
                    source: Some(source),
                }
            })?;
            if certs.is_empty() {
                return Err(Error::CaBundleParse {
                    path: path.clone(),
                    source: None,
                });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(Error::HttpClient)?;
        let docker_config = match &config.docker_config {
            DockerConfigSource::None => DockerConfig::default(),
            DockerConfigSource::File(path) => {
                DockerConfig::load(path).map_err(|e| Error::DockerConfig(Box::new(e)))?
            }
            DockerConfigSource::Default => match DockerConfig::default_path() {
                Some(path) => {
                    DockerConfig::load(&path).map_err(|e| Error::DockerConfig(Box::new(e)))?
                }
                None => DockerConfig::default(),
            },
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                docker_config,
                registries: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// How `registry` was reached (`https`, or `http` when insecure), once a connection worked.
    pub fn scheme_of(&self, registry: &str) -> Option<&'static str> {
        let state = lock(&self.inner.registries).get(registry).cloned()?;
        *lock(&state.scheme)
    }

    fn registry(&self, registry: &str) -> Arc<RegistryState> {
        lock(&self.inner.registries)
            .entry(registry.to_owned())
            .or_default()
            .clone()
    }

    /// Fetches a manifest (or index) by the reference's digest, else its tag, and verifies it.
    ///
    /// The bytes are returned exactly as served. Their sha256 must equal the reference's digest (if
    /// any) and the registry's `Docker-Content-Digest` (if sent); the media type comes from
    /// `Content-Type` or the manifest's `mediaType`, and must be an OCI or Docker schema 2 type.
    pub async fn get_manifest(&self, image: &Reference) -> Result<Manifest, Error> {
        let reference = manifest_reference(image);
        let ctx = Ctx {
            repo: image.name(),
            image: image.to_string(),
            what: format!("manifest {reference}"),
        };
        let limit = self.inner.config.max_manifest_size;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(media::MANIFEST_ACCEPT),
        );
        let mut backoff = Backoff::new(self.inner.config.retry.clone());
        let path = format!("manifests/{reference}");
        let (bytes, content_type, announced) = loop {
            let resp = self.request(&ctx, &path, &headers, &mut backoff).await?;
            let too_large = || Error::ManifestTooLarge {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                limit,
            };
            if resp.content_length().is_some_and(|len| len > limit) {
                return Err(too_large());
            }
            let text = |name: header::HeaderName| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let content_type = text(header::CONTENT_TYPE);
            let announced = text(header::HeaderName::from_static("docker-content-digest"));
            let url = resp.url().to_string();
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            let mut failure = None;
            // A manifest is small: its body, too, must arrive within the request's budget (a
            // registry dripping a byte per read timeout would otherwise hold us for days).
            while let Some(chunk) = match by(backoff.deadline(), stream.next()).await {
                Some(next) => next,
                None => return Err(self.out_of_time(&ctx, &url, &mut backoff)),
            } {
                match chunk {
                    Ok(chunk) => {
                        // Checked as it arrives: a body without Content-Length is still bounded.
                        if (body.len() + chunk.len()) as u64 > limit {
                            return Err(too_large());
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match failure {
                None => break (body, content_type, announced),
                Some(e) => self.transport_failure(&ctx, &url, e, &mut backoff).await?,
            }
        };
        let digest = Digest::of(&bytes);
        let mismatch = |expected: Digest, claimed_by| Error::DigestMismatch {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            expected: Box::new(expected),
            actual: Box::new(digest),
            claimed_by,
        };
        if let Some(wanted) = image.digest()
            && *wanted != digest
        {
            return Err(mismatch(*wanted, "the reference"));
        }
        // Only a sha256 header can be compared; registries that announce another algorithm are
        // still checked against the reference's digest above.
        if let Some(Ok(announced)) = announced.as_deref().map(Digest::parse)
            && announced != digest
        {
            return Err(mismatch(announced, "Docker-Content-Digest"));
        }
        let media_type =
            manifest::resolve_media_type(content_type.as_deref(), &bytes).map_err(|source| {
                Error::Manifest {
                    image: ctx.image.clone(),
                    what: ctx.what.clone(),
                    source,
                }
            })?;
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Decides what to do after a transport error: wait and return `Ok(())` to try again, or the
    /// error to give up with.
    pub(crate) async fn transport_failure(
        &self,
        ctx: &Ctx<'_>,
        url: &str,
        e: reqwest::Error,
        backoff: &mut Backoff,
    ) -> Result<(), Error> {
        let transient = is_transient(&e);
        let err = Error::Transport {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            url: url.to_owned(),
            source: e,
        };
        if !transient {
            return Err(err);
        }
        self.wait_or_give_up(ctx, err, None, backoff).await
    }

    /// The error for an attempt cut short by the deadline of its streak.
    pub(crate) fn out_of_time(&self, ctx: &Ctx<'_>, url: &str, backoff: &mut Backoff) -> Error {
        let give_up = backoff.out_of_time();
        Error::GaveUp {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            attempts: give_up.attempts,
            elapsed: give_up.elapsed,
            last: Box::new(Error::OutOfTime {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                url: url.to_owned(),
            }),
        }
    }

    pub(crate) async fn wait_or_give_up(
        &self,
        ctx: &Ctx<'_>,
        err: Error,
        retry_after: Option<Duration>,
        backoff: &mut Backoff,
    ) -> Result<(), Error> {
        let attempt = backoff.attempts();
        match backoff.failed(retry_after) {
            Ok(wait) => {
                if let Some(p) = &self.inner.config.progress {
                    p.retrying(&ctx.image, &ctx.what, attempt, wait, &chain(&err));
                }
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(give_up) => Err(Error::GaveUp {
                image: ctx.image.clone(),
                what: ctx.what.clone(),
                attempts: give_up.attempts,
                elapsed: give_up.elapsed,
                last: Box::new(err),
            }),
        }
    }

    /// GET `/v2/<repo>/<path>` with authentication and retries; returns a 2xx response (its body
    /// not read yet). 401/403/404 and other non-transient statuses become errors at once.
    pub(crate) async fn request(
        &self,
        ctx: &Ctx<'_>,
        path: &str,
        headers: &HeaderMap,
        backoff: &mut Backoff,
    ) -> Result<reqwest::Response, Error> {
        let scope = pull_scope(ctx.repo);
        let call = Call {
            method: reqwest::Method::GET,
            target: Target::Repo(path),
            headers,
            body: None,
            scope: &scope,
            pass: &[],
            retry: true,
        };
        self.send(ctx, &call, backoff).await
    }

    /// Sends `call` with authentication (answering challenges for `call.scope`) and, when
    /// `call.retry`, retries of transient failures; returns a 2xx response or one whose status is
    /// in `call.pass` (its body not read yet). 401/403/404 and other statuses become errors.
    pub(crate) async fn send(
        &self,
        ctx: &Ctx<'_>,
        call: &Call<'_>,
        backoff: &mut Backoff,
    ) -> Result<reqwest::Response, Error> {
        let registry = ctx.repo.registry();
        let state = self.registry(registry);
        let mut auth_rounds = 0;
        // With --insecure and no scheme known yet: set after HTTPS could not connect.
        let mut try_http = false;
        loop {
            let scheme_known = *lock(&state.scheme);
            let scheme = scheme_known.unwrap_or(if try_http { "http" } else { "https" });
            let host = api_host(ctx.repo.registry());
            let url = match call.target {
                Target::Repo(path) => {
                    format!("{scheme}://{host}/v2/{}/{path}", ctx.repo.repository())
                }
                Target::Location(loc)
                    if loc.starts_with("http://") || loc.starts_with("https://") =>
                {
                    loc.to_owned()
                }
                Target::Location(loc) => format!("{scheme}://{host}{loc}"),
            };
            let (authorization, sent) = self
                .authorization(ctx, &state, call.scope, backoff.deadline())
                .await?;
            let mut req = self
                .inner
                .http
                .request(call.method.clone(), &url)
                .headers(call.headers.clone());
            if let Some(a) = authorization {
                req = req.header(header::AUTHORIZATION, a);
            }
            if let Some(body) = call.body {
                req = req.body(body()?);
            }
            let Some(sent_result) = by(backoff.deadline(), req.send()).await else {
                return Err(self.out_of_time(ctx, &url, backoff));
            };
            let resp = match sent_result {
                Ok(resp) => resp,
                Err(e) => {
                    if scheme_known.is_none() && self.inner.config.insecure && e.is_connect() {
                        // --insecure: the registry may speak plain HTTP. Try that at once; the
                        // scheme is remembered only once a connection works, so a registry that was
                        // merely not up yet gets HTTPS again on the next attempt.
                        try_http = !try_http;
                        if try_http {
                            continue;
                        }
                    }
                    if !call.retry {
                        return Err(Error::Transport {
                            image: ctx.image.clone(),
                            what: ctx.what.clone(),
                            url,
                            source: e,
                        });
                    }
                    self.transport_failure(ctx, &url, e, backoff).await?;
                    continue;
                }
            };
            if scheme_known.is_none() {
                *lock(&state.scheme) = Some(scheme);
            }
            let status = resp.status();
            if status.is_success() || call.pass.contains(&status) {
                return Ok(resp);
            }
            let challenges: Vec<Challenge> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let detail = by(backoff.deadline(), error_detail(resp)).await.flatten();
            match status {
                StatusCode::UNAUTHORIZED => {
                    auth_rounds += 1;
                    self.answer_challenge(
                        ctx,
                        &state,
                        call.scope,
                        challenges,
                        sent,
                        auth_rounds,
                        detail,
                    )
                    .await?;
                }
                StatusCode::FORBIDDEN => {
                    return Err(Error::Denied {
                        image: ctx.image.clone(),
                        what: ctx.what.clone(),
                        detail,
                    });
                }
                StatusCode::NOT_FOUND => {
                    return Err(Error::NotFound {
                        image: ctx.image.clone(),
                        what: ctx.what.clone(),
                        detail,
                    });
                }
                s => {
                    let err = Error::Status {
                        image: ctx.image.clone(),
                        what: ctx.what.clone(),
                        url: url.clone(),
                        status: s.as_u16(),
                        detail,
                    };
                    if !call.retry || !is_transient_status(s.as_u16()) {
                        return Err(err);
                    }
                    self.wait_or_give_up(ctx, err, retry_after, backoff).await?;
                }
            }
        }
    }

    /// The `Authorization` header for a request, per what the registry asked for last time: none
    /// until it challenges, then basic credentials or a bearer token for the repository's pull
    /// scope (fetched once and shared by concurrent requests).
    async fn authorization(
        &self,
        ctx: &Ctx<'_>,
        state: &RegistryState,
        scope: &str,
        deadline: Instant,
    ) -> Result<(Option<String>, Sent), Error> {
        let scheme = lock(&state.auth).clone();
        match scheme {
            AuthScheme::None => Ok((None, Sent::Nothing)),
            AuthScheme::Basic => match self.credentials(ctx, state).await? {
                Some(Credentials::Basic { username, password }) => {
                    let b64 = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    Ok((Some(format!("Basic {b64}")), Sent::Basic))
                }
                _ => Ok((None, Sent::Nothing)),
            },
            AuthScheme::Bearer { realm, service } => {
                let slot = lock(&state.tokens)
                    .entry(scope.to_owned())
                    .or_default()
                    .clone();
                let mut slot = slot.lock().await;
                if let Some(t) = slot.as_ref()
                    // A margin, so a token does not expire between here and the registry.
                    && t.expires > Instant::now() + Duration::from_secs(5)
                {
                    return Ok((Some(format!("Bearer {}", t.token)), Sent::CachedToken));
                }
                let token = self
                    .fetch_token(ctx, state, &realm, service.as_deref(), scope, deadline)
                    .await?;
                let value = format!("Bearer {}", token.token);
                *slot = Some(token);
                Ok((Some(value), Sent::FreshToken))
            }
        }
    }

    /// Acts on a 401: records the challenged scheme so the next attempt authenticates, or fails
    /// when what we sent was already our best.
    // The request's context and what it sent and heard: grouping them would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn answer_challenge(
        &self,
        ctx: &Ctx<'_>,
        state: &RegistryState,
        scope: &str,
        challenges: Vec<Challenge>,
        sent: Sent,
        rounds: u32,
        detail: Option<String>,
    ) -> Result<(), Error> {
        let unauthorized = |reason: String| Error::Unauthorized {
            image: ctx.image.clone(),
            what: ctx.what.clone(),
            reason,
            detail: detail.clone(),
        };
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer { realm, service, .. } => Some((realm.clone(), service.clone())),
            _ => None,
        });
        let has_creds = self.credentials(ctx, state).await?.is_some();
        let refused = |what: &str| {
            if has_creds {
                format!("the registry refused {what} for {}", ctx.repo.registry())
            } else {
                format!(
                    "the registry requires authentication and there are no credentials for {} in the Docker config",
                    ctx.repo.registry()
                )
            }
        };
        // Two rounds at most: one to learn the scheme, one to retry with a fresh token or the
        // credentials; a third 401 means they are not good enough.
        if rounds > 2 || matches!(sent, Sent::FreshToken | Sent::Basic) {
            return Err(unauthorized(refused(if matches!(sent, Sent::Basic) {
                "the credentials"
            } else {
                "the token"
            })));
        }
        if let Some((realm, service)) = bearer {
            // A cached token was refused (expired early or revoked): drop it so a new one is fetched.
            if sent == Sent::CachedToken {
                let slot = lock(&state.tokens).get(scope).cloned();
                if let Some(slot) = slot {
                    *slot.lock().await = None;
                }
            }
            *lock(&state.auth) = AuthScheme::Bearer { realm, service };
            return Ok(());
        }
        if challenges.contains(&Challenge::Basic) {
            if !has_creds {
                return Err(unauthorized(refused("")));
            }
            if matches!(
                self.credentials(ctx, state).await?,
                Some(Credentials::IdentityToken(_))
            ) {
                return Err(unauthorized(format!(
                    "the registry asks for basic authentication, but the Docker config holds an identity token for {}",
                    ctx.repo.registry()
                )));
            }
            *lock(&state.auth) = AuthScheme::Basic;
            return Ok(());
        }
        match challenges.into_iter().next() {
            Some(Challenge::Other(scheme)) => Err(Error::UnsupportedAuth {
                image: ctx.image.clone(),
                scheme,
            }),
            _ => Err(unauthorized(
                "the registry answered 401 without a usable WWW-Authenticate challenge".to_owned(),
            )),
        }
    }

    /// The registry's credentials from the Docker config, looked up (and any helper run) once.
    async fn credentials(
        &self,
        ctx: &Ctx<'_>,
        state: &RegistryState,
    ) -> Result<Option<Credentials>, Error> {
        let registry = ctx.repo.registry();
        let err = |source| Error::Credentials {
            image: ctx.image.clone(),
            registry: registry.to_owned(),
            source: Box::new(source),
        };
        state
            .credentials
            .get_or_try_init(|| async {
                match self.inner.docker_config.lookup(registry).map_err(err)? {
                    Lookup::None => Ok(None),
                    Lookup::Inline(c) => Ok(Some(c)),
                    Lookup::Helper {
                        helper,
                        server_url,
                        fallback,
                    } => {
                        let found = docker_config::run_helper(
                            &helper,
                            registry,
                            &server_url,
                            self.inner.config.credential_helper_path.as_ref(),
                            self.inner.config.credential_helper_timeout,
                        )
                        .await
                        .map_err(err)?;
                        Ok(found.or(fallback))
                    }
                }
            })
            .await
            .cloned()
    }

    /// Gets a bearer token for `scope` from `realm`: GET with basic credentials (or none), or the
    /// OAuth2 refresh-token POST for identity tokens. Done by `deadline`, that of the request the
    /// token is for.
    async fn fetch_token(
        &self,
        ctx: &Ctx<'_>,
        state: &RegistryState,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        deadline: Instant,
    ) -> Result<CachedToken, Error> {
        let token_ctx = Ctx {
            repo: ctx.repo,
            image: ctx.image.clone(),
            what: format!("token for {scope}"),
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Protocol {
            image: ctx.image.clone(),
            what: token_ctx.what.clone(),
            reason: format!("the token realm {realm:?} is not a URL: {e}"),
        })?;
        match url.scheme() {
            "https" => {}
            // Credentials must not travel in clear unless the user said the registry is insecure.
            "http" if self.inner.config.insecure => {}
            other => {
                return Err(Error::Protocol {
                    image: ctx.image.clone(),
                    what: token_ctx.what.clone(),
                    reason: format!(
                        "the token realm {realm} uses {other}, not HTTPS (allowed only when insecure)"
                    ),
                });
            }
        }
        let credentials = self.credentials(ctx, state).await?;
        let mut backoff = Backoff::within(self.inner.config.retry.clone(), deadline);
        let started = Instant::now();
        loop {
            let req = match &credentials {
                Some(Credentials::IdentityToken(refresh)) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                        ("client_id", "imager"),
                        ("scope", scope),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    self.inner.http.post(url.clone()).form(&form)
                }
                other => {
                    {
                        let mut q = url.query_pairs_mut();
                        q.clear();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        // Several scopes (a push that mounts from another repository) are
                        // several `scope` parameters.
                        for one in scope.split(' ').filter(|s| !s.is_empty()) {
                            q.append_pair("scope", one);
                        }
                    }
                    let mut req = self.inner.http.get(url.clone());
                    if let Some(Credentials::Basic { username, password }) = other {
                        req = req.basic_auth(username, Some(password));
                    }
                    req
                }
            };
            let Some(sent) = by(backoff.deadline(), req.send()).await else {
                return Err(self.out_of_time(&token_ctx, realm, &mut backoff));
            };
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.transport_failure(&token_ctx, realm, e, &mut backoff)
                        .await?;
                    continue;
                }
            };
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            if status.is_success() {
                let Some(read) = by(backoff.deadline(), read_capped(resp, 1 << 20)).await else {
                    return Err(self.out_of_time(&token_ctx, realm, &mut backoff));
                };
                let body = match read {
                    Ok(b) => b,
                    Err(e) => {
                        self.transport_failure(&token_ctx, realm, e, &mut backoff)
                            .await?;
                        continue;
                    }
                };
                let token = auth::parse_token_response(&body).map_err(|source| Error::Token {
                    image: ctx.image.clone(),
                    realm: realm.to_owned(),
                    source,
                })?;
                return Ok(CachedToken {
                    token: token.token,
                    // Validity counts from the request, not the answer.
                    expires: started + token.expires_in,
                });
            }
            let detail = by(backoff.deadline(), error_detail(resp)).await.flatten();
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                let reason = if credentials.is_some() {
                    format!(
                        "the token server {realm} refused the credentials for {}",
                        ctx.repo.registry()
                    )
                } else {
                    format!(
                        "the token server {realm} refused anonymous access and there are no credentials for {} in the Docker config",
                        ctx.repo.registry()
                    )
                };
                return Err(Error::Unauthorized {
                    image: ctx.image.clone(),
                    what: token_ctx.what.clone(),
                    reason,
                    detail,
                });
            }
            let err = Error::Status {
                image: ctx.image.clone(),
                what: token_ctx.what.clone(),
                url: realm.to_owned(),
                status: status.as_u16(),
                detail,
            };
            if !is_transient_status(status.as_u16()) {
                return Err(err);
            }
            self.wait_or_give_up(&token_ctx, err, retry_after, &mut backoff)
                .await?;
        }
    }
}

/// Where a request goes.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// `/v2/<repository>/<path>`.
    Repo(&'a str),
    /// An upload's `Location`: absolute, or a path on the registry's host.
    Location(&'a str),
}

/// A request the client signs and retries: see [`Client::send`].
pub(crate) struct Call<'a> {
    pub(crate) method: reqwest::Method,
    pub(crate) target: Target<'a>,
    pub(crate) headers: &'a HeaderMap,
    /// Makes the body afresh for each attempt (a file-backed body is reopened).
    pub(crate) body: Option<&'a (dyn Fn() -> Result<reqwest::Body, Error> + Send + Sync)>,
    /// The bearer token scope(s), space-separated.
    pub(crate) scope: &'a str,
    /// Statuses handed back to the caller rather than made errors (a HEAD's 404).
    pub(crate) pass: &'a [StatusCode],
    /// False: a transient failure is returned at once (the caller resumes an upload itself).
    pub(crate) retry: bool,
}

/// `repository:<repo>:pull`
pub(crate) fn pull_scope(repo: &ImageName) -> String {
    format!("repository:{}:pull", repo.repository())
}

/// `fut`'s output, or `None` when `deadline` passes first.
pub(crate) async fn by<F: std::future::Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), fut)
        .await
        .ok()
}

/// Reads a small body whole, refusing more than `limit` bytes (an error page or token must not be
/// allowed to fill memory).
async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The registry's explanation of an error status, from the first 64 KiB of the body.
pub(crate) async fn error_detail(resp: reqwest::Response) -> Option<String> {
    // A body that cannot be read adds nothing to the status we already have.
    let body = read_capped(resp, 64 << 10).await.ok()?;
    auth::summarize_error_body(&body)
}

/// The host a registry's API is reached at: Docker Hub is named `docker.io` (references are
/// normalized to that, see [`imager_oci::reference::normalize_registry`]) but served by
/// `registry-1.docker.io`.
pub(crate) fn api_host(registry: &str) -> &str {
    if is_docker_hub(registry) {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// What goes after `/manifests/`: the digest when there is one (it pins the content), else the tag.
fn manifest_reference(image: &Reference) -> String {
    match (image.digest(), image.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        // Reference::parse gives a reference without either one the default tag.
        (None, None) => imager_oci::reference::DEFAULT_TAG.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_manifest_references() {
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(api_host(hub), "registry-1.docker.io");
        }
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
        let name = ImageName::new("docker.io", "library/alpine").expect("valid");
        let r = Reference::with_tag(name.clone(), "3.20").expect("valid");
        assert_eq!(manifest_reference(&r), "3.20");
        let d = Digest::of(b"x");
        let r = Reference::with_tag_and_digest(name, "3.20", d).expect("valid");
        assert_eq!(manifest_reference(&r), d.to_string());
    }
}

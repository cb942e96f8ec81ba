//! Authentication against a real registry: basic auth over TLS with a self-signed CA (credentials
//! from a Docker config and from credential helpers), the bearer-token dance against the registry's
//! token mode, and the errors when credentials are missing, wrong, or unobtainable.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tls::{basic_auth_entry, docker_config, htpasswd, make_pki};
use common::token::{SERVICE, TokenServer};
use common::*;
use imager_registry::{ClientConfig, DockerConfigSource, Error, ImageManifest};

const USER: &str = "puller";
const PASSWORD: &str = "s3cret:with-colon";

/// A registry behind TLS (our own CA) and htpasswd, holding `test/private:v1`.
struct Secured {
    work: tempfile::TempDir,
    registry: Registry,
    ca: std::path::PathBuf,
    image: TestImage,
}

fn secured() -> Secured {
    let work = tempfile::tempdir().expect("temp");
    let pki = make_pki(work.path());
    let registry = Registry::start(RegistryOptions {
        tls: Some((pki.cert.clone(), pki.key.clone())),
        htpasswd: Some(htpasswd(work.path(), USER, PASSWORD)),
        token: None,
    });
    let image = test_image("amd64", 64 << 10);
    let creds = format!("{USER}:{PASSWORD}");
    push_image(
        work.path(),
        &registry.host(),
        "test/private",
        "v1",
        &image,
        Some(&creds),
    );
    Secured {
        work,
        registry,
        ca: pki.ca,
        image,
    }
}

impl Secured {
    fn host(&self) -> String {
        self.registry.host()
    }
    /// A client trusting our CA, with credentials from `config_json` as a Docker config.
    fn config(&self, name: &str, config_json: serde_json::Value) -> ClientConfig {
        let path = docker_config(&self.work.path().join(name), &config_json);
        ClientConfig {
            ca_bundle: Some(self.ca.clone()),
            docker_config: DockerConfigSource::File(path),
            retry: fast_retry(),
            ..ClientConfig::default()
        }
    }
    fn with_password(&self, password: &str) -> ClientConfig {
        self.config(
            &format!("cfg-{password}"),
            serde_json::json!({"auths": {self.host(): basic_auth_entry(USER, password)}}),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_over_tls_with_a_private_ca() {
    let s = secured();
    let host = s.host();
    let c = client(s.with_password(PASSWORD));
    let m = c
        .get_manifest(&tagged(&host, "test/private", "v1"))
        .await
        .expect("manifest with credentials");
    let creds = format!("{USER}:{PASSWORD}");
    assert_eq!(
        m.bytes,
        skopeo_raw(
            s.work.path(),
            &format!("{host}/test/private:v1"),
            Some(&creds)
        )
    );
    let parsed = ImageManifest::parse(&m.media_type, &m.bytes).expect("parse");
    let out = tempfile::tempdir().expect("temp");
    for d in parsed.blobs() {
        let o = c
            .get_blob(
                &repo(&host, "test/private"),
                &d.digest,
                Some(d.size),
                &out.path().join(d.digest.hex()),
            )
            .await
            .expect("blob with credentials");
        assert_eq!(
            sha256_hex(&std::fs::read(&o.path).expect("read")),
            d.digest.hex()
        );
    }
    assert_eq!(files_under(out.path()).len(), s.image.blobs().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_without_or_with_wrong_credentials() {
    let s = secured();
    let host = s.host();
    let image = tagged(&host, "test/private", "v1");

    let anonymous = client(s.config("anon", serde_json::json!({})));
    let err = anonymous
        .get_manifest(&image)
        .await
        .expect_err("no credentials");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "unauthorized: {host}/test/private:v1: manifest v1: the registry requires authentication \
             and there are no credentials for {host} in the Docker config \
             (UNAUTHORIZED: authentication required)"
        )
    );

    let wrong = client(s.with_password("wrong"));
    let err = wrong
        .get_manifest(&image)
        .await
        .expect_err("wrong password");
    assert!(
        err.to_string()
            .starts_with(&format!("unauthorized: {host}/test/private:v1: manifest v1: the registry refused the credentials for {host}")),
        "{err}"
    );
    assert_eq!(err.status(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_unless_insecure() {
    let s = secured();
    let host = s.host();
    let image = tagged(&host, "test/private", "v1");
    let auths = serde_json::json!({"auths": {host.clone(): basic_auth_entry(USER, PASSWORD)}});

    // Without our CA the certificate is unknown: a clear error at once, not a retry loop.
    let untrusted = ClientConfig {
        ca_bundle: None,
        ..s.config("untrusted", auths.clone())
    };
    let started = Instant::now();
    let err = client(untrusted)
        .get_manifest(&image)
        .await
        .expect_err("untrusted");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let msg = chain(&err);
    assert!(
        msg.starts_with(&format!(
            "{host}/test/private:v1: manifest v1: request to https://{host}/v2/"
        )),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // --insecure: the certificate is not checked.
    let insecure = ClientConfig {
        ca_bundle: None,
        insecure: true,
        ..s.config("insecure", auths)
    };
    let m = client(insecure)
        .get_manifest(&image)
        .await
        .expect("insecure TLS");
    assert_eq!(m.bytes, s.image.manifest.bytes);

    // A CA bundle that is not PEM is refused when the client is built.
    let bogus = s.work.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").expect("write");
    let err = imager_registry::Client::new(ClientConfig {
        ca_bundle: Some(bogus.clone()),
        ..ClientConfig::default()
    })
    .expect_err("bogus CA");
    assert!(
        err.to_string().contains(&bogus.display().to_string()),
        "{err}"
    );
}

/// Writes `docker-credential-<name>` into `dir`: it records what it was asked (argument and stdin)
/// and answers with `answer`, or fails with `exit` and the text "credentials not found".
fn write_helper(dir: &Path, name: &str, answer: &str) {
    std::fs::create_dir_all(dir).expect("helper dir");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$1\" > \"$(dirname \"$0\")/{name}.asked\"\ncat >> \"$(dirname \"$0\")/{name}.asked\"\n{answer}\n"
    );
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).expect("write helper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_helper() {
    let s = secured();
    let host = s.host();
    let helpers = s.work.path().join("helpers");
    write_helper(
        &helpers,
        "imager-test",
        &format!(r#"printf '{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}' "$1""#),
    );
    let config = ClientConfig {
        credential_helper_path: Some(helpers.clone().into_os_string()),
        ..s.config(
            "helper",
            serde_json::json!({"credHelpers": {host.clone(): "imager-test"}}),
        )
    };
    let m = client(config)
        .get_manifest(&tagged(&host, "test/private", "v1"))
        .await
        .expect("manifest with helper credentials");
    assert_eq!(m.bytes, s.image.manifest.bytes);
    // The helper protocol: `get`, then the server URL on stdin.
    let asked = std::fs::read_to_string(helpers.join("imager-test.asked")).expect("helper ran");
    assert_eq!(asked, format!("get\n{host}"));

    // A credsStore whose helper knows nothing about the registry: anonymous, hence unauthorized.
    write_helper(
        &helpers,
        "empty-store",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let config = ClientConfig {
        credential_helper_path: Some(helpers.into_os_string()),
        ..s.config("store", serde_json::json!({"credsStore": "empty-store"}))
    };
    let err = client(config)
        .get_manifest(&tagged(&host, "test/private", "v1"))
        .await
        .expect_err("no credentials in the store");
    assert!(
        err.to_string().contains("there are no credentials for"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credential_helper_is_a_clear_error() {
    let s = secured();
    let host = s.host();
    let config = s.config(
        "missing",
        serde_json::json!({"credHelpers": {host.clone(): "imager-test-not-installed"}}),
    );
    let err = client(config)
        .get_manifest(&tagged(&host, "test/private", "v1"))
        .await
        .expect_err("missing helper");
    assert!(matches!(err, Error::Credentials { .. }), "{err:?}");
    assert_eq!(
        chain(&err),
        format!(
            "{host}/test/private:v1: cannot get the credentials for {host}: credential helper \
             docker-credential-imager-test-not-installed (configured for {host}) is not installed or not on PATH"
        )
    );
}

/// A plain-HTTP registry in token mode with our token server.
async fn token_registry(work: &Path) -> (Registry, TokenServer) {
    let tokens = TokenServer::start(work, USER, PASSWORD, "refresh-me").await;
    let registry = Registry::start(RegistryOptions {
        token: Some((
            tokens.realm.clone(),
            SERVICE.to_owned(),
            common::token::ISSUER.to_owned(),
            tokens.roots.clone(),
        )),
        ..RegistryOptions::default()
    });
    (registry, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_dance() {
    let work = tempfile::tempdir().expect("temp");
    let (registry, tokens) = token_registry(work.path()).await;
    let host = registry.host();
    let image = test_image("arm64", 64 << 10);
    let creds = format!("{USER}:{PASSWORD}");
    // skopeo (containers/image) does its own token dance to push: a second, independent client.
    push_image(work.path(), &host, "test/tok", "v1", &image, Some(&creds));
    let pushes = tokens.asked().len();

    let config = |name: &str, json: serde_json::Value| ClientConfig {
        docker_config: DockerConfigSource::File(docker_config(&work.path().join(name), &json)),
        ..insecure_config()
    };
    let with_creds = client(config(
        "basic",
        serde_json::json!({"auths": {host.clone(): basic_auth_entry(USER, PASSWORD)}}),
    ));
    let m = with_creds
        .get_manifest(&tagged(&host, "test/tok", "v1"))
        .await
        .expect("manifest with a token");
    assert_eq!(m.bytes, image.manifest.bytes);
    let out = tempfile::tempdir().expect("temp");
    let cfg = &image.config;
    with_creds
        .get_blob(
            &repo(&host, "test/tok"),
            &cfg.digest(),
            Some(cfg.bytes.len() as u64),
            &out.path().join("c"),
        )
        .await
        .expect("blob with the same token");
    // One token for the manifest and the blob: cached per scope.
    let ours: Vec<_> = tokens.asked().into_iter().skip(pushes).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].user.as_deref(), Some(USER));
    assert_eq!(ours[0].scopes, ["repository:test/tok:pull"]);
    assert_eq!(ours[0].service.as_deref(), Some(SERVICE));

    // Anonymous: the token server hands out a token granting nothing, the registry refuses it.
    let anonymous = client(config("anon", serde_json::json!({})));
    let err = anonymous
        .get_manifest(&tagged(&host, "test/tok", "v1"))
        .await
        .expect_err("anonymous");
    assert!(
        err.to_string().starts_with(&format!(
            "unauthorized: {host}/test/tok:v1: manifest v1: the registry requires authentication and there are no credentials for {host}"
        )),
        "{err}"
    );

    // Wrong password: the token server itself refuses.
    let wrong = client(config(
        "wrong",
        serde_json::json!({"auths": {host.clone(): basic_auth_entry(USER, "nope")}}),
    ));
    let err = wrong
        .get_manifest(&tagged(&host, "test/tok", "v1"))
        .await
        .expect_err("wrong password");
    assert!(
        err.to_string().contains(&format!(
            "the token server {} refused the credentials for {host}",
            tokens.realm
        )),
        "{err}"
    );

    // An identity token from a helper (user name `<token>`): exchanged with the OAuth2 POST.
    let helpers = work.path().join("helpers");
    write_helper(
        &helpers,
        "idtoken",
        r#"printf '{"Username":"<token>","Secret":"refresh-me"}'"#,
    );
    let refresh = client(ClientConfig {
        credential_helper_path: Some(helpers.into_os_string()),
        ..config(
            "idtoken",
            serde_json::json!({"credHelpers": {host.clone(): "idtoken"}}),
        )
    });
    let m = refresh
        .get_manifest(&tagged(&host, "test/tok", "v1"))
        .await
        .expect("manifest with an identity token");
    assert_eq!(m.bytes, image.manifest.bytes);
    let last = tokens.asked().pop().expect("asked");
    assert_eq!(
        (last.method.as_str(), last.user.as_deref()),
        ("POST", Some("<refresh>"))
    );
}

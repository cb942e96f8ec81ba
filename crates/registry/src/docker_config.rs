//! Credentials from the Docker client configuration (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`), the way the Docker CLI resolves them: a per-registry `credHelpers`
//! entry, else the global `credsStore`, else the inline `auths` entry.
//!
//! Parsing and lookup are pure; running a `docker-credential-<name>` helper is in [`run_helper`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use crate::auth::Credentials;
use imager_oci::reference::is_docker_hub;

/// The key Docker uses for Docker Hub in `auths` and what it passes to credential helpers.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// A parsed Docker config; only the credential parts.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Clone, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthEntry(<redacted>)")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

/// Why the Docker config or a credential could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the Docker config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Docker config {} is not valid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the `auth` of {key:?} in the Docker config is not base64 of user:password")]
    BadAuth { key: String },
    #[error(
        "credential helper docker-credential-{helper} (configured for {registry}) is not installed or not on PATH"
    )]
    HelperMissing { helper: String, registry: String },
    #[error("credential helper docker-credential-{helper} could not be run for {registry}")]
    HelperSpawn {
        helper: String,
        registry: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "credential helper docker-credential-{helper} failed for {registry} ({status}): {message}"
    )]
    HelperFailed {
        helper: String,
        registry: String,
        status: String,
        message: String,
    },
    #[error(
        "credential helper docker-credential-{helper} did not answer for {registry} within {timeout:?}"
    )]
    HelperTimeout {
        helper: String,
        registry: String,
        timeout: Duration,
    },
    #[error(
        "credential helper docker-credential-{helper} gave an answer for {registry} that is not its JSON"
    )]
    HelperOutput {
        helper: String,
        registry: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the credentials for a registry come from, per the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Ask `docker-credential-<helper>` with `server_url` on its stdin; if it knows nothing, use
    /// `fallback` (an inline entry, when the config also has one).
    Helper {
        helper: String,
        server_url: String,
        fallback: Option<Credentials>,
    },
    Inline(Credentials),
    /// Nothing configured: anonymous.
    None,
}

/// Docker's `ConvertToHostname`: `https://host:port/v1/` and `host:port` name the same registry.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

impl DockerConfig {
    /// The config file Docker would read: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
    }

    /// Reads `path`; a missing file is an empty config (anonymous pulls), as for Docker.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).map_err(|source| CredentialError::Parse {
                path: path.to_owned(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(CredentialError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: RawConfig = serde_json::from_slice(bytes)?;
        Ok(Self {
            auths: raw.auths,
            cred_helpers: raw.cred_helpers,
            creds_store: raw.creds_store.filter(|s| !s.is_empty()),
        })
    }

    /// Where the credentials for `registry` (as users write it: `docker.io`, `ghcr.io`,
    /// `127.0.0.1:5000`) come from.
    pub fn lookup(&self, registry: &str) -> Result<Lookup, CredentialError> {
        let hub = is_docker_hub(registry);
        let matches = |key: &str| {
            let host = key_host(key);
            if hub {
                is_docker_hub(host)
            } else {
                host == registry
            }
        };
        // Prefer the key Docker itself writes, then any spelling of the same host.
        let preferred = if hub { DOCKER_HUB_SERVER } else { registry };
        let inline = match self
            .auths
            .get_key_value(preferred)
            .or_else(|| self.auths.iter().find(|(k, _)| matches(k)))
        {
            Some((key, entry)) => entry_credentials(key, entry)?,
            None => None,
        };
        let helper = self
            .cred_helpers
            .get(preferred)
            .or_else(|| {
                self.cred_helpers
                    .iter()
                    .find(|(k, _)| matches(k))
                    .map(|(_, v)| v)
            })
            .filter(|h| !h.is_empty())
            .or(self.creds_store.as_ref());
        Ok(match (helper, inline) {
            (Some(helper), fallback) => Lookup::Helper {
                helper: helper.clone(),
                server_url: preferred.to_owned(),
                fallback,
            },
            (None, Some(c)) => Lookup::Inline(c),
            (None, None) => Lookup::None,
        })
    }
}

fn entry_credentials(key: &str, e: &AuthEntry) -> Result<Option<Credentials>, CredentialError> {
    if !e.identitytoken.is_empty() {
        return Ok(Some(Credentials::IdentityToken(e.identitytoken.clone())));
    }
    if !e.auth.is_empty() {
        let bad = || CredentialError::BadAuth {
            key: key.to_owned(),
        };
        // Some tools write the padding-less form.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(e.auth.trim()))
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    if !e.username.is_empty() || !e.password.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: e.username.clone(),
            password: e.password.clone(),
        }));
    }
    // `{}` entries are what Docker leaves next to a credsStore: no inline secret.
    Ok(None)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// Parses a credential helper's `get` answer; the user name `<token>` marks an identity token.
pub fn parse_helper_output(stdout: &[u8]) -> Result<Option<Credentials>, serde_json::Error> {
    let a: HelperAnswer = serde_json::from_slice(stdout)?;
    Ok(match (a.username.as_str(), a.secret.is_empty()) {
        (_, true) if a.username.is_empty() => None,
        ("<token>", _) => Some(Credentials::IdentityToken(a.secret)),
        _ => Some(Credentials::Basic {
            username: a.username,
            password: a.secret,
        }),
    })
}

/// Runs `docker-credential-<helper> get` with `server_url` on stdin.
///
/// `search_path`, when given, is searched before `$PATH` (for helpers shipped next to the tool).
/// "credentials not found" is not an error: the registry is then tried anonymously, as by Docker.
pub async fn run_helper(
    helper: &str,
    registry: &str,
    server_url: &str,
    search_path: Option<&OsString>,
    timeout: Duration,
) -> Result<Option<Credentials>, CredentialError> {
    let program = format!("docker-credential-{helper}");
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A helper stuck on a desktop prompt must not outlive a timed-out lookup.
        .kill_on_drop(true);
    if let Some(extra) = search_path {
        // Setting PATH on the command makes std look the program up in it; the helper itself keeps
        // the rest of PATH for whatever it runs.
        let mut path = extra.clone();
        if let Some(current) = std::env::var_os("PATH") {
            path.push(":");
            path.push(current);
        }
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CredentialError::HelperMissing {
                helper: helper.to_owned(),
                registry: registry.to_owned(),
            }
        } else {
            CredentialError::HelperSpawn {
                helper: helper.to_owned(),
                registry: registry.to_owned(),
                source,
            }
        }
    })?;
    let spawn_err = |source| CredentialError::HelperSpawn {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        source,
    };
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server_url.as_bytes())
                .await
                .map_err(spawn_err)?;
            // Dropping closes stdin: the helper reads to EOF.
        }
        child.wait_with_output().await.map_err(spawn_err)
    };
    let output = tokio::time::timeout(timeout, run).await.map_err(|_| {
        CredentialError::HelperTimeout {
            helper: helper.to_owned(),
            registry: registry.to_owned(),
            timeout,
        }
    })??;
    if !output.status.success() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        // docker-credential-helpers' ErrCredentialsNotFound.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(CredentialError::HelperFailed {
            helper: helper.to_owned(),
            registry: registry.to_owned(),
            status: output.status.to_string(),
            message: message.chars().take(500).collect(),
        });
    }
    parse_helper_output(&output.stdout).map_err(|source| CredentialError::HelperOutput {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn inline_auths() {
        let cfg = DockerConfig::parse(
            format!(
                r#"{{"auths":{{
                "https://index.docker.io/v1/":{{"auth":"{}"}},
                "registry.example.com:5000":{{"username":"bob","password":"pw"}},
                "https://ghcr.io":{{"auth":"{}"}},
                "quay.io":{{"identitytoken":"refresh"}},
                "empty.example.com":{{}},
                "broken.example.com":{{"auth":"!!!"}},
                "nocolon.example.com":{{"auth":"{}"}}
            }}}}"#,
                b64("hub:secret:with:colons"),
                b64("gh:tok"),
                b64("nocolon")
            )
            .as_bytes(),
        )
        .expect("parses");
        // Docker Hub under each of its names; a password may contain colons.
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            assert_eq!(
                cfg.lookup(hub).expect("ok"),
                Lookup::Inline(basic("hub", "secret:with:colons"))
            );
        }
        assert_eq!(
            cfg.lookup("registry.example.com:5000").expect("ok"),
            Lookup::Inline(basic("bob", "pw"))
        );
        // A key with a scheme names the same host.
        assert_eq!(
            cfg.lookup("ghcr.io").expect("ok"),
            Lookup::Inline(basic("gh", "tok"))
        );
        assert_eq!(
            cfg.lookup("quay.io").expect("ok"),
            Lookup::Inline(Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(cfg.lookup("empty.example.com").expect("ok"), Lookup::None);
        // The port is part of the name.
        assert_eq!(
            cfg.lookup("registry.example.com").expect("ok"),
            Lookup::None
        );
        for bad in ["broken.example.com", "nocolon.example.com"] {
            let err = cfg.lookup(bad).expect_err("bad auth");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn helpers() {
        let cfg = DockerConfig::parse(
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{}},"gcr.io":{{"auth":"{}"}}}},
                "credHelpers":{{"gcr.io":"gcloud","index.docker.io":"hubhelper","off.example.com":""}},
                "credsStore":"desktop"}}"#,
                b64("inline:pw")
            )
            .as_bytes(),
        )
        .expect("parses");
        assert_eq!(
            cfg.lookup("gcr.io").expect("ok"),
            Lookup::Helper {
                helper: "gcloud".into(),
                server_url: "gcr.io".into(),
                fallback: Some(basic("inline", "pw")),
            }
        );
        // Docker Hub's helper is asked about the v1 URL, as Docker does.
        assert_eq!(
            cfg.lookup("docker.io").expect("ok"),
            Lookup::Helper {
                helper: "hubhelper".into(),
                server_url: DOCKER_HUB_SERVER.into(),
                fallback: None,
            }
        );
        // Everything else goes to the credsStore.
        for other in ["quay.io", "off.example.com"] {
            assert_eq!(
                cfg.lookup(other).expect("ok"),
                Lookup::Helper {
                    helper: "desktop".into(),
                    server_url: other.into(),
                    fallback: None,
                }
            );
        }
        assert_eq!(
            DockerConfig::default().lookup("quay.io").expect("ok"),
            Lookup::None
        );
        assert!(DockerConfig::parse(b"{\"auths\": []}").is_err());
        assert!(DockerConfig::parse(b"{}").is_ok());
    }

    #[test]
    fn helper_answers() {
        assert_eq!(
            parse_helper_output(br#"{"ServerURL":"x","Username":"u","Secret":"s"}"#).expect("ok"),
            Some(basic("u", "s"))
        );
        assert_eq!(
            parse_helper_output(br#"{"Username":"<token>","Secret":"refresh"}"#).expect("ok"),
            Some(Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(
            parse_helper_output(br#"{"Username":"","Secret":""}"#).expect("ok"),
            None
        );
        assert!(parse_helper_output(b"credentials not found").is_err());
    }

    #[test]
    fn missing_file_is_empty() {
        let cfg = DockerConfig::load(Path::new("/nonexistent/imager/config.json")).expect("empty");
        assert_eq!(cfg.lookup("docker.io").expect("ok"), Lookup::None);
    }
}

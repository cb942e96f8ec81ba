//! A token server for the registry's `auth: token` mode: it signs ES256 JWTs with a key whose
//! self-signed certificate the registry trusts (`rootcertbundle`, chain sent as `x5c`). The registry
//! checks the signature, issuer, audience, expiry and granted actions itself, so a client that gets
//! through has done the real bearer dance against the real server.
//!
//! Users with the right password get what they ask for; anonymous requests get a token granting
//! nothing (as Docker Hub does for private repositories), which the registry then refuses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, KeyPair};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub const SERVICE: &str = "imager-test-registry";
pub const ISSUER: &str = "imager-test-token-server";

/// A token request as the server saw it.
#[derive(Debug, Clone)]
pub struct Asked {
    pub method: String,
    /// The user who authenticated (`<refresh>` for the OAuth2 refresh-token form), if any.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    pub service: Option<String>,
}

struct Shared {
    key: EcdsaKeyPair,
    cert_der_b64: String,
    user: String,
    password: String,
    refresh_token: String,
    asked: Mutex<Vec<Asked>>,
}

pub struct TokenServer {
    pub realm: String,
    /// The certificate bundle the registry must trust.
    pub roots: PathBuf,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(dir: &Path, user: &str, password: &str, refresh_token: &str) -> Self {
        let key = KeyPair::generate().expect("signing key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, ISSUER);
        let cert = params.self_signed(&key).expect("signing certificate");
        let roots = dir.join("token-roots.pem");
        std::fs::write(&roots, cert.pem()).expect("write roots");
        let rng = ring::rand::SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der(), &rng)
                .expect("ring key");
        let shared = Arc::new(Shared {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            user: user.to_owned(),
            password: password.to_owned(),
            refresh_token: refresh_token.to_owned(),
            asked: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind token server");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, &s).await;
                });
            }
        });
        Self {
            realm: format!("http://{addr}/token"),
            roots,
            shared,
            task,
        }
    }

    pub fn asked(&self) -> Vec<Asked> {
        self.shared.asked.lock().expect("state").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(v);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn jwt(s: &Shared, subject: &str, access: &[serde_json::Value]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [s.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", rand_u64()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).expect("json")),
        b64url(&serde_json::to_vec(&claims).expect("json"))
    );
    let rng = ring::rand::SystemRandom::new();
    let sig = s.key.sign(&rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", b64url(sig.as_ref()))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// `repository:name:pull,push` -> the JWT access entry.
fn access_for(scope: &str) -> Option<serde_json::Value> {
    let mut parts = scope.splitn(3, ':');
    let (kind, rest) = (parts.next()?, parts.next()?);
    let actions = parts.next().unwrap_or("");
    Some(serde_json::json!({
        "type": kind,
        "name": rest,
        "actions": actions.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>(),
    }))
}

async fn serve(mut conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = buf[head_end..].to_vec();
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params = form_pairs(query);
    if method == "POST" {
        params.extend(form_pairs(&String::from_utf8_lossy(&body)));
    }
    let get_all = |k: &str| -> Vec<String> {
        params
            .iter()
            .filter(|(n, _)| n == k)
            .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let scopes = get_all("scope");
    let service = get_all("service").into_iter().next();

    // Who is asking: basic credentials on GET, a refresh token on POST.
    let mut refused = false;
    let mut user = None;
    if let Some(auth) = header("authorization")
        && let Some(b64) = auth.strip_prefix("Basic ")
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .unwrap_or_default();
        if decoded == format!("{}:{}", s.user, s.password) {
            user = Some(s.user.clone());
        } else {
            refused = true;
        }
    }
    if method == "POST" {
        let grant = get_all("grant_type").into_iter().next();
        let token = get_all("refresh_token").into_iter().next();
        if grant.as_deref() == Some("refresh_token")
            && token.as_deref() == Some(s.refresh_token.as_str())
        {
            user = Some("<refresh>".to_owned());
        } else {
            refused = true;
        }
    }
    s.asked.lock().expect("state").push(Asked {
        method: method.clone(),
        user: user.clone(),
        scopes: scopes.clone(),
        service,
    });
    let (status, body) = if refused {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_owned(),
        )
    } else {
        let access: Vec<_> = if user.is_some() {
            scopes.iter().filter_map(|sc| access_for(sc)).collect()
        } else {
            Vec::new()
        };
        let token = jwt(s, user.as_deref().unwrap_or(""), &access);
        let body = if method == "POST" {
            serde_json::json!({"access_token": token, "expires_in": 300})
        } else {
            serde_json::json!({"token": token, "expires_in": 300})
        };
        ("200 OK", body.to_string())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

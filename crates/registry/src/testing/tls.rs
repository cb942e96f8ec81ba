//! A throwaway CA and server certificate for 127.0.0.1, an htpasswd file, a Docker config.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct TestPki {
    /// The CA certificate (PEM): what the client must trust.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`; the server certificate is valid for
/// 127.0.0.1 and localhost and signed by the CA.
pub fn make_pki(dir: &Path) -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "imager registry test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");

    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).expect("write CA");
    std::fs::write(&pki.cert, cert.pem()).expect("write cert");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
    pki
}

/// An htpasswd file with one bcrypt (`$2y$`, what the registry documents) user.
pub fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    // Cost 4 (bcrypt's minimum) keeps the registry's check fast; strength is irrelevant here.
    let hash = bcrypt::hash_with_result(password, 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
    path
}

/// A Docker config (`config.json`) from raw JSON; returns its path.
pub fn docker_config(dir: &Path, json: &serde_json::Value) -> PathBuf {
    std::fs::create_dir_all(dir).expect("config dir");
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(json).expect("json")).expect("write config");
    path
}

pub fn basic_auth_entry(user: &str, password: &str) -> serde_json::Value {
    serde_json::json!({
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    })
}

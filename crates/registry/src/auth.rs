//! Pure parts of registry authentication: `WWW-Authenticate` challenges, token responses, OCI error
//! bodies. The I/O that uses them is in `client.rs`.

use std::time::Duration;

use serde::Deserialize;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (or a personal access token used as the password).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in the Docker config, or a credential helper
    /// answering with the user name `<token>`), exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=...,service=...,scope=...`: get a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        /// `error="insufficient_scope"` etc., when the registry says why a token was refused.
        error: Option<String>,
    },
    /// `Basic realm=...`: send the user name and password with every request.
    Basic,
    /// A scheme we do not speak (kept so the error can name it).
    Other(String),
}

/// Parses a `WWW-Authenticate` header value (RFC 7235): one or more challenges, each a scheme
/// followed by comma-separated `name=value` parameters whose values may be quoted strings (which
/// contain commas in Bearer scopes: `scope="repository:a:pull,push"`).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut lexer = Lexer {
        s: header.as_bytes(),
        i: 0,
    };
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    // True right after a scheme, until a comma: only there may a token68 credential appear.
    let mut after_scheme = false;
    while lexer.peek().is_some() {
        let comma = lexer.skip_separators();
        if comma {
            after_scheme = false;
        }
        let Some(token) = lexer.token() else {
            // Stray punctuation: skip it rather than give up on the rest of the header.
            if lexer.peek().is_some() {
                lexer.i += 1;
            }
            continue;
        };
        lexer.skip_ws();
        let is_param = lexer.peek() == Some(b'=') && lexer.peek_at(1) != Some(b'=');
        if is_param && current.is_some() {
            lexer.i += 1;
            lexer.skip_ws();
            let value = if lexer.peek() == Some(b'"') {
                lexer.quoted()
            } else {
                lexer.token().unwrap_or_default()
            };
            if let Some((_, params)) = current.as_mut() {
                params.push((token.to_ascii_lowercase(), value));
            }
            after_scheme = false;
        } else if after_scheme {
            // `Scheme token68` (e.g. `Negotiate abc==`): a credential, not a new challenge.
            while lexer.peek() == Some(b'=') {
                lexer.i += 1;
            }
            after_scheme = false;
        } else {
            if let Some(done) = current.take() {
                out.push(finish(done));
            }
            current = Some((token, Vec::new()));
            after_scheme = true;
        }
    }
    if let Some(done) = current.take() {
        out.push(finish(done));
    }
    out
}

fn finish((scheme, params): (String, Vec<(String, String)>)) -> Challenge {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        match get("realm") {
            Some(realm) => Challenge::Bearer {
                realm,
                service: get("service"),
                scope: get("scope"),
                error: get("error"),
            },
            // A bearer challenge without a realm cannot be answered.
            None => Challenge::Other(scheme),
        }
    } else if scheme.eq_ignore_ascii_case("basic") {
        Challenge::Basic
    } else {
        Challenge::Other(scheme)
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.i + ahead).copied()
    }
    /// Skips blanks and commas; says whether there was a comma.
    fn skip_separators(&mut self) -> bool {
        let mut comma = false;
        while let Some(b) = self.peek() {
            match b {
                b',' => comma = true,
                b' ' | b'\t' => {}
                _ => break,
            }
            self.i += 1;
        }
        comma
    }
    /// An RFC 7230 token (plus `/` and `:` that appear unquoted in realms some servers send).
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    /// A quoted string with backslash escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// How long the token is good for; the spec's default is 60 seconds when the server is silent.
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct RawToken {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Why a token response could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token response is not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the token response has neither `token` nor `access_token`")]
    Missing,
}

/// Parses a token response: `token` (Docker) or `access_token` (OAuth2), either may be present.
pub fn parse_token_response(body: &[u8]) -> Result<Token, TokenError> {
    let raw: RawToken = serde_json::from_slice(body).map_err(TokenError::Json)?;
    let token = raw
        .token
        .filter(|t| !t.is_empty())
        .or(raw.access_token.filter(|t| !t.is_empty()))
        .ok_or(TokenError::Missing)?;
    Ok(Token {
        token,
        // Tokens shorter than a minute are against the spec; treating them as 60 s would only cause
        // a 401 and a refetch, never a wrong result.
        expires_in: Duration::from_secs(raw.expires_in.unwrap_or(60).max(1)),
    })
}

#[derive(Deserialize)]
struct RawErrors {
    #[serde(default)]
    errors: Vec<RawErrorEntry>,
}

#[derive(Deserialize)]
struct RawErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A short human summary of an error body: the OCI `{"errors":[{"code","message"}]}` form when it is
/// one, else the first line of text (bounded), else nothing.
pub fn summarize_error_body(body: &[u8]) -> Option<String> {
    if let Ok(raw) = serde_json::from_slice::<RawErrors>(body) {
        let parts: Vec<String> = raw
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                (true, _) => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return Some(parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    // HTML error pages from proxies say nothing useful beyond the status.
    if line.starts_with('<') {
        return None;
    }
    Some(line.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            [Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
                error: None,
            }]
        );
    }

    #[test]
    fn challenge_variants() {
        // Scope with a comma inside quotes, spaces around `=`, case-insensitive scheme and names,
        // an error parameter, and an escaped quote.
        let c = parse_challenges(
            r#"bearer Realm = "https://r/t\"x" , service=reg, scope="repository:a/b:pull,push", error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            [Challenge::Bearer {
                realm: "https://r/t\"x".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            }]
        );
        // Several challenges in one header.
        assert_eq!(
            parse_challenges(r#"Basic realm="basic-realm", Bearer realm="https://t", Negotiate"#),
            [
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "https://t".into(),
                    service: None,
                    scope: None,
                    error: None
                },
                Challenge::Other("Negotiate".into())
            ]
        );
        // Unquoted realm with a URL in it.
        assert!(matches!(
            parse_challenges("Bearer realm=https://auth.example.com/token,service=x").as_slice(),
            [Challenge::Bearer { realm, service: Some(s), .. }] if realm == "https://auth.example.com/token" && s == "x"
        ));
        // A bearer challenge without a realm is unusable.
        assert_eq!(
            parse_challenges("Bearer service=x"),
            [Challenge::Other("Bearer".into())]
        );
        assert_eq!(parse_challenges(""), []);
        assert_eq!(
            parse_challenges(r#"Basic realm="unterminated"#),
            [Challenge::Basic]
        );
        // A token68 credential after a scheme is not a challenge of its own.
        assert_eq!(
            parse_challenges(r#"Negotiate abc==, Basic realm="r""#),
            [Challenge::Other("Negotiate".into()), Challenge::Basic]
        );
        assert_eq!(parse_challenges("; Basic"), [Challenge::Basic]);
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            br#"{"token":"abc","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#,
        )
        .expect("ok");
        assert_eq!(t.token, "abc");
        assert_eq!(t.expires_in, Duration::from_secs(300));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).expect("ok");
        assert_eq!(
            (t.token.as_str(), t.expires_in),
            ("xyz", Duration::from_secs(60))
        );
        let t = parse_token_response(br#"{"token":"","access_token":"xyz"}"#).expect("ok");
        assert_eq!(t.token, "xyz");
        assert!(matches!(
            parse_token_response(br#"{"expires_in":3}"#),
            Err(TokenError::Missing)
        ));
        assert!(matches!(
            parse_token_response(b"nope"),
            Err(TokenError::Json(_))
        ));
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            summarize_error_body(
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#
            )
            .as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(
            summarize_error_body(b"\n  404 page not found\nmore").as_deref(),
            Some("404 page not found")
        );
        assert_eq!(summarize_error_body(b"<html><body>502</body></html>"), None);
        assert_eq!(summarize_error_body(b""), None);
        assert_eq!(
            summarize_error_body(br#"{"errors":[]}"#),
            Some(r#"{"errors":[]}"#.into())
        );
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::IdentityToken("s3cret".into())).contains("s3cret"));
    }
}

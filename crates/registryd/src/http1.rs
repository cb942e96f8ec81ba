//! HTTP/1.1 as far as a read-only registry needs it, pure: a request head in (parsed by
//! `httparse`), a response head out. No I/O here; [`crate::conn`] drives it.
//!
//! Why not hyper: a blob must go from the page cache to the socket with `sendfile(2)`, and hyper
//! owns the socket and only writes bytes it is handed. What a registry serves is small: `GET` and
//! `HEAD` without request bodies, `Content-Length` answers, keep-alive. A request that carries a
//! body (a push: refused anyway) is answered and its connection closed, so bodies are never
//! parsed.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};

/// The longest request head accepted (request line and headers); longer ones get 431. A valid
/// registry request line is under 1.1 KiB ([`crate::route::MAX_PATH_LEN`] plus a query), and
/// clients send a few hundred bytes of headers.
pub const MAX_HEAD: usize = 16 << 10;
/// The most request headers accepted.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The client wants the connection kept after this answer (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// A body follows the head (`Content-Length` > 0 or any `Transfer-Encoding`). It is never
    /// read: the answer closes the connection.
    pub has_body: bool,
}

/// Why a head was refused; the connection answers with the status and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request head: {0}")]
    Malformed(String),
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Parses the head at the start of `buf`: `Ok(None)` if it is not complete yet, else the head
/// and the number of bytes it took (what follows is the next request, if pipelined).
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if used > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let malformed = |what: &str| HeadError::Malformed(what.to_owned());
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| malformed("bad method"))?;
    let uri: Uri = req
        .path
        .unwrap_or("")
        .parse()
        .map_err(|_| malformed("bad request target"))?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| malformed("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| malformed("header value"))?;
        headers.append(name, value);
    }
    let http11 = req.version == Some(1);
    let connection = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let keep_alive = if http11 {
        !connection("close")
    } else {
        connection("keep-alive")
    };
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v != "0");
    Ok(Some((
        RequestHead {
            method,
            uri,
            headers,
            keep_alive,
            has_body,
        },
        used,
    )))
}

/// The response head: status line, `headers`, `Date`, and `Connection: close` when the
/// connection ends after this answer.
pub fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    keep_alive: bool,
    date: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn heads_and_keep_alive() {
        let text =
            "GET /v2/a/manifests/b?ns=x HTTP/1.1\r\nHost: h\r\nAccept: a\r\nAccept: b\r\n\r\nGET /";
        let (h, used) = parse(text).unwrap().unwrap();
        assert_eq!(used, text.len() - "GET /".len());
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri.path(), "/v2/a/manifests/b");
        assert_eq!(h.uri.query(), Some("ns=x"));
        assert_eq!(h.headers.get_all(header::ACCEPT).iter().count(), 2);
        assert!(h.keep_alive && !h.has_body);

        let (h, _) = parse("GET / HTTP/1.1\r\nConnection: Keep-Alive, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
    }

    #[test]
    fn absolute_form_targets_keep_their_path() {
        let (h, _) = parse("GET http://evil.example/v2/x/blobs/y HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.uri.path(), "/v2/x/blobs/y");
    }

    #[test]
    fn bodies_are_noticed() {
        for (headers, body) in [
            ("Content-Length: 0\r\n", false),
            ("Content-Length: 5\r\n", true),
            ("Transfer-Encoding: chunked\r\n", true),
        ] {
            let text = format!("PUT /v2/x/blobs/uploads/ HTTP/1.1\r\n{headers}\r\n");
            let (h, _) = parse(&text).unwrap().unwrap();
            assert_eq!(h.has_body, body, "{headers}");
        }
    }

    #[test]
    fn partial_bad_and_oversized_heads() {
        assert!(parse("GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
        for bad in [
            "GET /v2/sm all/ HTTP/1.1\r\n\r\n",
            "GET /v2/\0 HTTP/1.1\r\n\r\n",
            "GET /v2/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "\u{1}GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = format!("GET /v2/ HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(&long).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(&many).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn response_heads() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let head = response_head(StatusCode::PARTIAL_CONTENT, &h, false, "D");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 206 Partial Content\r\ncontent-length: 3\r\ndate: D\r\nconnection: close\r\n\r\n"
        );
        let head = response_head(StatusCode::OK, &HeaderMap::new(), true, "D");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ndate: D\r\n\r\n"
        );
    }
}

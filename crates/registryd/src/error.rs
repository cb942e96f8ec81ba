//! Errors as the distribution API spells them: a status and `{"errors":[{"code","message"}]}`.
//! Upstream's registryd answers with empty bodies; clients (containerd, skopeo) print the message
//! of a JSON error, so a user sees why a pull failed instead of a bare status.

use std::fmt;

use http::StatusCode;

/// The error codes this server sends (the OCI distribution spec's, plus distribution's
/// `PAGINATION_NUMBER_INVALID` and `UNKNOWN`, which the spec leaves to implementations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    ManifestUnknown,
    NameUnknown,
    NameInvalid,
    DigestInvalid,
    PaginationNumberInvalid,
    /// A method this read-only server does not implement (push, delete), or an endpoint it lacks.
    Unsupported,
    /// The cache holds the content but it is damaged in every root (500).
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlobUnknown => "BLOB_UNKNOWN",
            Self::ManifestUnknown => "MANIFEST_UNKNOWN",
            Self::NameUnknown => "NAME_UNKNOWN",
            Self::NameInvalid => "NAME_INVALID",
            Self::DigestInvalid => "DIGEST_INVALID",
            Self::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Self::Unsupported => "UNSUPPORTED",
            Self::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: status, code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn name_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::NameInvalid, message)
    }

    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::DigestInvalid, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Push, delete and anything but GET/HEAD: this server is read-only.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            format!("{method} is not supported: this registry serves an image cache read-only"),
        )
    }

    pub fn no_endpoint(path: &str) -> Self {
        // The path is echoed through the JSON encoder, so a hostile one cannot break the body.
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unsupported,
            format!("no such endpoint: {path}"),
        )
    }

    /// The OCI error body.
    pub fn body(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "errors": [{"code": self.code.as_str(), "message": self.message}]
        });
        // Serializing a `Value` of strings cannot fail; an empty body is the fallback anyway.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_oci_error_json() {
        let e = ApiError::name_invalid("bad \"name\"\u{0}");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID");
        assert_eq!(v["errors"][0]["message"], "bad \"name\"\u{0}");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::method_not_allowed("PUT").status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}

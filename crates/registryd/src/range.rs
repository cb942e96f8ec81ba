//! `Range: bytes=...` for blobs (RFC 9110 §14): one range is served as 206, an unsatisfiable one is
//! 416. Anything else a server may ignore, and this one does, answering with the whole blob: a
//! malformed header, another unit, or several ranges (registries' clients resume downloads with
//! one open range, `bytes=N-`; multipart answers would buy nothing).

/// How to answer a blob request of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// 200 with the whole blob.
    Full,
    /// 206 with `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

impl ByteRange {
    /// Reads the `Range` header value (if any) against a blob of `len` bytes.
    pub fn parse(header: Option<&[u8]>, len: u64) -> Self {
        let Some(spec) = header
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.trim().strip_prefix("bytes="))
        else {
            return Self::Full;
        };
        if spec.contains(',') {
            return Self::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            // `u64::from_str` would take a leading '+'; the grammar is digits only.
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (first.trim().is_empty(), number(first), number(last)) {
            // `bytes=-N`: the last N bytes.
            (true, _, Some(suffix)) => {
                if suffix == 0 || len == 0 {
                    Self::Unsatisfiable
                } else {
                    Self::Partial {
                        start: len.saturating_sub(suffix),
                        end: len - 1,
                    }
                }
            }
            // `bytes=N-` and `bytes=N-M`.
            (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
                if let Some(end) = end
                    && end < start
                {
                    // Invalid syntax: ignored, like any malformed range.
                    return Self::Full;
                }
                if start >= len {
                    return Self::Unsatisfiable;
                }
                let end = end.map_or(len - 1, |e| e.min(len - 1));
                Self::Partial { start, end }
            }
            _ => Self::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(h: &str, len: u64) -> ByteRange {
        ByteRange::parse(Some(h.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        use ByteRange::*;
        assert_eq!(ByteRange::parse(None, 10), Full);
        assert_eq!(r("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(r("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(r("bytes=2-", 10), Partial { start: 2, end: 9 });
        assert_eq!(r("bytes=2-100", 10), Partial { start: 2, end: 9 });
        assert_eq!(r("bytes=9-9", 10), Partial { start: 9, end: 9 });
        assert_eq!(r("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(r("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(r(" bytes= 1 - 2 ", 10), Partial { start: 1, end: 2 });
    }

    #[test]
    fn unsatisfiable() {
        use ByteRange::*;
        assert_eq!(r("bytes=10-", 10), Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
        assert_eq!(r("bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn ignored_means_the_whole_blob() {
        use ByteRange::*;
        for h in [
            "bytes=5-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1",
            "bytes=99999999999999999999999-",
            "0-1",
        ] {
            assert_eq!(r(h, 10), Full, "{h}");
        }
        assert_eq!(ByteRange::parse(Some(&[0xff, 0xfe]), 10), Full);
    }
}

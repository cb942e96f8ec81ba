//! A `Range` header value against a blob length (the first 8 input bytes, little-endian): the
//! answer stays inside the blob.
#![no_main]

use imager_registryd::range::ByteRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (len, header) = match data.split_first_chunk::<8>() {
        Some((len, rest)) => (u64::from_le_bytes(*len), rest),
        None => (1000, data),
    };
    match ByteRange::parse(Some(header), len) {
        ByteRange::Partial { start, end } => assert!(start <= end && end < len),
        ByteRange::Unsatisfiable | ByteRange::Full => {}
    }
});

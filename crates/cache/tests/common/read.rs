//! Reading an opened cache back whole, for comparisons (shared by every test crate of the cache).

use std::collections::BTreeMap;
use std::io::Read as _;

/// Every entry of an opened cache, path -> bytes, read from wherever it lies.
pub fn cache_files(cache: &imager_cache::Cache) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if cache.is_streamed() {
        cache
            .read_stream(&mut |e, r| {
                let mut bytes = Vec::new();
                r.read_to_end(&mut bytes)?;
                out.insert(e.path.clone(), bytes);
                Ok(())
            })
            .unwrap();
    } else {
        for e in cache.entries() {
            let mut bytes = Vec::new();
            cache
                .open_entry(e)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            assert_eq!(bytes.len() as u64, e.size, "{}", e.path);
            out.insert(e.path.clone(), bytes);
        }
    }
    assert_eq!(out.len(), cache.entries().len());
    out
}

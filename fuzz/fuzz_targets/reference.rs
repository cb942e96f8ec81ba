//! Text the user or a cache gives as an image reference, a name, a tag, a digest or a platform.
//! Beyond "no panic": what parses prints as text that parses to the same value.
#![no_main]

use imager_oci::reference::{self, ImageName, Reference};
use imager_oci::{Digest, Platform, PlatformSelection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        let printed = r.to_string();
        assert_eq!(
            Reference::parse(&printed).as_ref(),
            Ok(&r),
            "{s:?} -> {printed:?}"
        );
        assert!(reference::check_repository(r.repository()).is_ok());
        assert!(ImageName::new(r.registry(), r.repository()).is_ok());
    }
    if let Ok(n) = ImageName::parse(s) {
        assert_eq!(ImageName::parse(&n.to_string()).as_ref(), Ok(&n));
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
    }
    if let Some(d) = Digest::from_file_name(s) {
        assert_eq!(d.file_name(), s);
    }
    if let Ok(p) = Platform::parse(s) {
        assert_eq!(Platform::parse(&p.to_string()).as_ref(), Ok(&p));
    }
    let _ = PlatformSelection::parse(s.split(' '));
    let _ = reference::check_repository(s);
    let _ = reference::is_tag(s);
});

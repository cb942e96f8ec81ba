//! Property tests of the parsers that take outside text: digests, references, platforms (as
//! `--platform` values and as JSON), manifests and indexes. Whatever the input, they return a value
//! or an error, never panic; where a value can be written back, writing and parsing again gives
//! the same value. The fuzz targets (`fuzz/`, `cargo xtask fuzz`) run the same parsers for longer.

#![allow(clippy::unwrap_used)]

use imager_oci::manifest::{self, REFERENCE_TYPE_ANNOTATION};
use imager_oci::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use imager_oci::reference::{self, NAME_MAX};
use imager_oci::{Digest, ImageName, Manifest, Platform, Reference};
use proptest::prelude::*;
use serde_json::{Value, json};

/// 512 cases per property, or `PROPTEST_CASES` when set (for a longer run by hand).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest::from_sha256)
}

/// A registry the reference grammar reads as one: a dotted host, a host with a port, or
/// `localhost`, in any case (upper case is then refused); Docker Hub's other names among them.
fn registry() -> impl Strategy<Value = String> {
    let host = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?";
    prop_oneof![
        (host, host).prop_map(|(a, b)| format!("{a}.{b}")),
        (host, 1u16..).prop_map(|(h, p)| format!("{h}:{p}")),
        (host, host, 1u16..).prop_map(|(a, b, p)| format!("{a}.{b}:{p}")),
        Just("localhost".to_owned()),
        Just("docker.io".to_owned()),
        Just("index.docker.io".to_owned()),
        Just("registry-1.docker.io".to_owned()),
    ]
}

fn repository() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,4}((\\.|_|__|-{1,3})[a-z0-9]{1,4}){0,2}";
    prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"))
}

fn tag() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
}

/// Text made of the characters references are written with, so that parsing often succeeds and
/// every branch of the grammar is reached.
fn reference_like() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => "[a-z0-9]{1,4}",
        2 => Just("/".to_owned()),
        1 => Just(":".to_owned()),
        1 => "[._-]|__|--",
        1 => Just("@".to_owned()),
        1 => digest().prop_map(|d| d.to_string()),
        1 => Just("localhost".to_owned()),
        1 => Just("docker.io".to_owned()),
        1 => "[A-Z]{1,2}|[0-9]{1,6}",
        1 => "[a-zA-Z0-9._:/@-]{1,4}",
    ];
    prop::collection::vec(token, 0..14).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn digests_round_trip(d in digest()) {
        let text = d.to_string();
        prop_assert_eq!(Digest::parse(&text).unwrap(), d);
        prop_assert_eq!(Digest::from_file_name(&d.file_name()), Some(d));
        let json = serde_json::to_string(&d).unwrap();
        prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    /// One spelling per digest: whatever parses is written back exactly as it was given.
    #[test]
    fn parsed_digests_are_canonical(s in "(sha256[:-]|[a-z0-9]{1,8}:)?[0-9a-fA-F]{60,66}|\\PC{0,80}") {
        if let Ok(d) = Digest::parse(&s) {
            prop_assert_eq!(d.to_string(), s.clone());
        }
        if let Some(d) = Digest::from_file_name(&s) {
            prop_assert_eq!(d.file_name(), s);
        }
    }

    /// A reference written from its parts parses to those parts, normalized, and prints as a
    /// reference that parses to the same value.
    #[test]
    fn references_round_trip(
        registry in proptest::option::of(registry()),
        repository in repository(),
        tag in proptest::option::of(tag()),
        digest in proptest::option::of(digest()),
    ) {
        // Without a registry, a first component with a dot would be read as one.
        prop_assume!(registry.is_some() || !repository.split('/').next().unwrap().contains('.') || !repository.contains('/'));
        let mut text = String::new();
        if let Some(r) = &registry {
            text.push_str(r);
            text.push('/');
        }
        text.push_str(&repository);
        if let Some(t) = &tag {
            text.push(':');
            text.push_str(t);
        }
        if let Some(d) = &digest {
            text.push('@');
            text.push_str(&d.to_string());
        }
        // Hosts are refused in upper case, naming the lower-case spelling (caches keep hosts lower
        // case; see `validate_registry`).
        if let Some(r) = &registry
            && r.bytes().any(|b| b.is_ascii_uppercase())
        {
            let parsed = Reference::parse(&text);
            let lower = r.to_ascii_lowercase();
            prop_assert!(
                matches!(&parsed, Err(e @ imager_oci::ReferenceError::UppercaseRegistry { .. }) if e.to_string().contains(&format!("({lower})"))),
                "{text:?}: {parsed:?}"
            );
            return Ok(());
        }
        let want_registry = reference::normalize_registry(registry.as_deref().unwrap_or("docker.io"));
        let want_repository = reference::hub_repository(want_registry, &repository);
        let parsed = Reference::parse(&text);
        if want_registry.len() + 1 + want_repository.len() > NAME_MAX {
            prop_assert!(parsed.is_err());
            return Ok(());
        }
        let r = parsed.map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(r.registry(), want_registry);
        prop_assert_eq!(r.repository(), &*want_repository);
        let want_tag = match (&tag, &digest) {
            (Some(t), _) => Some(t.as_str()),
            (None, Some(_)) => None,
            (None, None) => Some(reference::DEFAULT_TAG),
        };
        prop_assert_eq!(r.tag(), want_tag);
        prop_assert_eq!(r.digest(), digest.as_ref());
        prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r.clone());
        prop_assert_eq!(ImageName::parse(&r.name().to_string()).unwrap(), r.name().clone());
    }

    /// Whatever text parses, its printed form parses to the same reference, and the names in it
    /// pass the checks the server and the cache apply on their own.
    #[test]
    fn any_parsed_reference_round_trips(s in prop_oneof![reference_like(), "\\PC{0,80}", ".{0,40}"]) {
        if let Ok(r) = Reference::parse(&s) {
            let printed = r.to_string();
            prop_assert_eq!(Reference::parse(&printed).unwrap(), r.clone(), "{:?} -> {:?}", s, printed);
            prop_assert!(reference::check_repository(r.repository()).is_ok());
            prop_assert!(ImageName::new(r.registry(), r.repository()).is_ok());
            prop_assert!(r.repository().split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
        }
        if let Ok(n) = ImageName::parse(&s) {
            prop_assert_eq!(ImageName::parse(&n.to_string()).unwrap(), n);
        }
        let _ = reference::check_repository(&s);
        let _ = reference::is_tag(&s);
    }

    /// `--platform` values: what parses prints as a value that parses to the same platform.
    #[test]
    fn platforms_round_trip(s in prop_oneof![
        "(linux|LINUX|windows|darwin|plan9|x)/(amd64|x86_64|x86-64|aarch64|arm64|arm|armhf|armel|i386|i686|386|riscv64|X)(/[a-zA-Z0-9 ]{0,4})?",
        "[ a-z0-9/]{0,24}",
        "\\PC{0,40}",
    ]) {
        if let Ok(p) = Platform::parse(&s) {
            prop_assert_eq!(Platform::parse(&p.to_string()).unwrap(), p.clone());
            prop_assert!(p.matches(&p));
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<Platform>(&json).unwrap(), p);
        }
        let _ = imager_oci::PlatformSelection::parse(s.split(' '));
    }

    /// Platforms read from JSON (any strings) are normalized once: written back and read again,
    /// they stay the same.
    #[test]
    fn json_platforms_round_trip(os in "\\PC{0,12}", arch in prop_oneof![
        Just("x86_64".to_owned()), Just("armhf".to_owned()), Just("aarch64".to_owned()), "\\PC{0,12}"
    ], variant in proptest::option::of("\\PC{0,6}")) {
        let raw = json!({"os": os, "architecture": arch, "variant": variant});
        let p: Platform = serde_json::from_value(raw).unwrap();
        let again: Platform = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        prop_assert_eq!(again, p);
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests and indexes

const MEDIA_TYPES: [&str; 4] = [
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

#[derive(Debug, Clone)]
struct Desc {
    media_type: String,
    digest: Digest,
    size: u64,
    platform: Option<(String, String, Option<String>)>,
    reference_type: Option<String>,
}

fn desc() -> impl Strategy<Value = Desc> {
    let platform = (
        "linux|windows|\\PC{0,6}",
        "amd64|arm64|arm|riscv64",
        proptest::option::of("v[0-9]"),
    );
    (
        "[a-z./+0-9-]{0,40}",
        digest(),
        any::<u64>(),
        proptest::option::of(platform),
        proptest::option::of("attestation-manifest|\\PC{0,8}"),
    )
        .prop_map(
            |(media_type, digest, size, platform, reference_type)| Desc {
                media_type,
                digest,
                size,
                platform,
                reference_type,
            },
        )
}

impl Desc {
    fn json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.size,
        });
        if let Some((os, arch, variant)) = &self.platform {
            v["platform"] = json!({"os": os, "architecture": arch});
            if let Some(variant) = variant {
                v["platform"]["variant"] = json!(variant);
            }
        }
        if let Some(t) = &self.reference_type {
            v["annotations"] = json!({ REFERENCE_TYPE_ANNOTATION: t });
        }
        v
    }

    fn check(&self, d: &imager_oci::Descriptor) -> Result<(), TestCaseError> {
        prop_assert_eq!(&d.media_type, &self.media_type);
        prop_assert_eq!(d.digest, self.digest);
        prop_assert_eq!(d.size, self.size);
        let platform = d
            .platform
            .as_ref()
            .map(|p| (p.os.clone(), p.architecture.clone(), p.variant.clone()));
        prop_assert_eq!(platform, self.platform.clone());
        prop_assert_eq!(d.reference_type(), self.reference_type.as_deref());
        Ok(())
    }
}

/// Any JSON value, nested a few levels: what a hostile registry or cache could hand over.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "\\PC{0,12}",
            Just("sha256:".to_owned() + &"a".repeat(64)),
            Just(OCI_INDEX.to_owned()),
            Just(OCI_MANIFEST.to_owned()),
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("schemaVersion".to_owned()),
        Just("mediaType".to_owned()),
        Just("config".to_owned()),
        Just("layers".to_owned()),
        Just("manifests".to_owned()),
        Just("digest".to_owned()),
        Just("size".to_owned()),
        Just("platform".to_owned()),
        Just("annotations".to_owned()),
        Just("urls".to_owned()),
        Just("os".to_owned()),
        Just("architecture".to_owned()),
        "\\PC{0,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every reading of manifest bytes the tool does, on the same input: none may panic, and those
/// that must agree do.
fn read_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    let plain = manifest::parse(bytes);
    for media_type in MEDIA_TYPES {
        let served = manifest::parse_as(media_type, bytes);
        if let Ok(m) = &served {
            prop_assert_eq!(m.media_type(), media_type);
        }
        if let (Ok(p), Ok(s)) = (&plain, &served)
            && p.media_type() == media_type
        {
            prop_assert_eq!(p, s);
        }
        let _ = manifest::index_children(media_type, bytes);
        let _ = imager_oci::ImageManifest::parse(media_type, bytes);
        let _ = manifest::resolve_media_type(Some(media_type), bytes);
        let _ = imager_oci::select_platforms(
            media_type,
            bytes,
            &imager_oci::PlatformSelection::Only(vec![Platform::linux_amd64()]),
        );
    }
    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain; charset=x"),
        Some(""),
    ] {
        if let Ok(t) = manifest::resolve_media_type(content_type, bytes) {
            prop_assert!(imager_oci::ManifestKind::of(&t).is_some());
        }
    }
    let _ = manifest::config_platform(bytes);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// An index written from descriptors reads back as those descriptors, whichever way it is read.
    #[test]
    fn indexes_read_back(children in prop::collection::vec(desc(), 0..5), docker in any::<bool>()) {
        let media_type = if docker { DOCKER_MANIFEST_LIST } else { OCI_INDEX };
        let bytes = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": children.iter().map(Desc::json).collect::<Vec<_>>(),
        }))
        .unwrap();
        let Manifest::Index(index) = manifest::parse(&bytes).unwrap() else {
            return Err(TestCaseError::fail("not read as an index"));
        };
        prop_assert_eq!(&index.media_type, media_type);
        prop_assert_eq!(index.manifests.len(), children.len());
        for (want, got) in children.iter().zip(&index.manifests) {
            want.check(got)?;
        }
        prop_assert_eq!(manifest::index_children(media_type, &bytes).unwrap(), index.manifests);
        prop_assert_eq!(manifest::resolve_media_type(None, &bytes).unwrap(), media_type);
        read_every_way(&bytes)?;
    }

    /// So does an image manifest, with or without its `mediaType` (OCI lets it out).
    #[test]
    fn image_manifests_read_back(
        config in desc(),
        layers in prop::collection::vec(desc(), 0..5),
        media_type in proptest::option::of(prop_oneof![Just(OCI_MANIFEST), Just(DOCKER_MANIFEST)]),
    ) {
        let mut v = json!({
            "schemaVersion": 2,
            "config": config.json(),
            "layers": layers.iter().map(Desc::json).collect::<Vec<_>>(),
        });
        if let Some(m) = media_type {
            v["mediaType"] = json!(m);
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        let Manifest::Image(m) = manifest::parse(&bytes).unwrap() else {
            return Err(TestCaseError::fail("not read as an image manifest"));
        };
        prop_assert_eq!(&m.media_type, media_type.unwrap_or(OCI_MANIFEST));
        config.check(&m.config)?;
        prop_assert_eq!(m.layers.len(), layers.len());
        for (want, got) in layers.iter().zip(&m.layers) {
            want.check(got)?;
        }
        prop_assert_eq!(m.blobs().count(), layers.len() + 1);
        read_every_way(&bytes)?;
    }

    /// Any JSON at all, and any bytes: an error or a value, never a panic.
    #[test]
    fn any_json_is_read_or_refused(v in any_json()) {
        read_every_way(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn any_bytes_are_read_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        read_every_way(&bytes)?;
    }
}

/// Nesting deeper than serde_json's recursion limit is an error, not a stack overflow.
#[test]
fn deep_nesting_is_refused() {
    for open in ["[", "{\"manifests\":"] {
        let bytes = open.repeat(100_000).into_bytes();
        assert!(manifest::parse(&bytes).is_err());
        assert!(manifest::resolve_media_type(None, &bytes).is_err());
        assert!(manifest::config_platform(&bytes).is_none());
    }
}

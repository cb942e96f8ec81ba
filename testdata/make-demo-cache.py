#!/usr/bin/env python3
"""Writes testdata/demo-cache: a tiny image cache in the upstream flat layout.

Every blob and manifest is named by the sha256 of its exact bytes, as a real cache is. Run it from
anywhere; it replaces the directory next to this script. The output is committed, so this script
only documents how it was made (and lets it be remade after a deliberate change).
"""

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "demo-cache"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Stands in for the arm64 child manifest the index names; it is not part of the cache.
ARM64_CHILD = b"arm64 child manifest, not cached\n"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def name(d: str) -> str:
    # FAT and the upstream cache both spell "sha256:" as "sha256-".
    return d.replace(":", "-")


def dumps(obj) -> bytes:
    # Registries serve pretty-printed JSON as often as compact; either way the bytes are the identity.
    return (json.dumps(obj, indent=2) + "\n").encode()


def layer(files: dict) -> bytes:
    """A gzip'd tar with fixed owners and times, so the same input gives the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = 0o755 if path.startswith("bin/") else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write(rel: str, data: bytes) -> None:
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def blob(data: bytes) -> dict:
    d = digest(data)
    write(f"blob/{name(d)}", data)
    return {"digest": d, "size": len(data)}


def config(cmd: list) -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": "imager testdata/make-demo-cache.py"}],
    }


def image(repo: str, tag: str, cmd: list, files: dict, with_index: bool) -> None:
    layer_bytes = layer(files)
    cfg = config(cmd)
    # diff_id = sha256 of the uncompressed layer, as in a real image config.
    cfg["rootfs"]["diff_ids"] = [digest(gzip.decompress(layer_bytes))]
    cfg_desc = blob(dumps(cfg))
    layer_desc = blob(layer_bytes)
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **cfg_desc},
            "layers": [{"mediaType": OCI_LAYER, **layer_desc}],
        }
    )
    write(f"manifests/{repo}/digest/{name(digest(manifest))}", manifest)
    top = manifest
    if with_index:
        # The full index is kept, though only the linux/amd64 child is cached (as upstream does).
        top = dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest(manifest),
                        "size": len(manifest),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    },
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest(ARM64_CHILD),
                        "size": len(ARM64_CHILD),
                        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                    },
                ],
            }
        )
        write(f"manifests/{repo}/digest/{name(digest(top))}", top)
    write(f"manifests/{repo}/reference/{tag}", top)


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    image(
        "docker.io/library/busybox",
        "latest",
        ["sh"],
        {"bin/hello": b"#!/bin/sh\necho hello from the imager demo cache\n"},
        with_index=True,
    )
    # Ten levels below the cache root with a 71-character file name: proves Rock Ridge names and
    # deep directories survive on the medium.
    image(
        "ghcr.io/canonical/k8s-snap/sig-storage/csi-node-driver-registrar",
        "v2.13.0",
        ["/csi-node-driver-registrar"],
        {"csi-node-driver-registrar": b"placeholder binary\n"},
        with_index=False,
    )
    # Verify: every file named by a digest holds exactly those bytes.
    for path in sorted(ROOT.rglob("sha256-*")):
        assert "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    print(f"{ROOT}: {sum(1 for p in ROOT.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()

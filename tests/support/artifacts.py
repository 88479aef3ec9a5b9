"""Weights pushed to a real registry the ways ML tooling pushes them.

`image_of_files` makes what a node mounts: an OCI image of tar layers (umoci, pushed with skopeo).
`push_artifact` speaks the distribution API by hand, as oras and ModelPack tools do, to push what
nodes get wrong: an empty-config artifact, files as blobs of their own media types, an index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.images import run
from support.registry import LocalRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


def _request(
    registry: LocalRegistry, method: str, path: str, data: bytes = b"", content_type: str = ""
) -> urllib.request.addinfourl:
    url = path if path.startswith("http") else f"{registry.url}{path}"
    request = urllib.request.Request(url, data=data or None, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if registry.auth:
        token = base64.b64encode(":".join(registry.auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cadata=registry.ca_pem) if registry.tls else None
    return urllib.request.urlopen(request, timeout=30, context=context)  # type: ignore[no-any-return]


def push_blob(registry: LocalRegistry, repository: str, blob: Blob) -> None:
    started = _request(registry, "POST", f"/v2/{repository}/blobs/uploads/")
    location = started.headers["Location"]
    if not location.startswith("http"):
        location = f"{registry.url}{location}"
    separator = "&" if "?" in location else "?"
    _request(
        registry,
        "PUT",
        f"{location}{separator}digest={blob.digest}",
        blob.data,
        "application/octet-stream",
    )


def push_manifest(
    registry: LocalRegistry, repository: str, tag: str, manifest: dict[str, object]
) -> str:
    """Push `manifest` under `tag`; its digest."""
    body = json.dumps(manifest, separators=(",", ":")).encode()
    _request(
        registry,
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        body,
        str(manifest.get("mediaType") or OCI_MANIFEST),
    )
    return "sha256:" + hashlib.sha256(body).hexdigest()


def push_artifact(
    registry: LocalRegistry,
    repository: str,
    tag: str,
    config: Blob,
    layers: list[Blob],
    artifact_type: str | None = None,
) -> str:
    """An OCI 1.1 manifest of `config` and `layers` (pushed first); its digest."""
    for blob in (config, *layers):
        push_blob(registry, repository, blob)
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            layer.descriptor(annotations={"org.opencontainers.image.title": f"file-{index}"})
            for index, layer in enumerate(layers)
        ],
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    return push_manifest(registry, repository, tag, manifest)


def empty_config_artifact(registry: LocalRegistry, repository: str, files: dict[str, bytes]) -> str:
    """What `oras push` makes by default: OCI's empty config, one blob per file."""
    return push_artifact(
        registry,
        repository,
        "empty-config",
        Blob(EMPTY_CONFIG, b"{}"),
        [Blob("application/vnd.oci.image.layer.v1.tar", data) for data in files.values()],
        artifact_type="application/vnd.example.weights",
    )


def blob_per_file_artifact(
    registry: LocalRegistry, repository: str, files: dict[str, bytes]
) -> str:
    """A CNCF ModelPack-style artifact: a model config, each file a raw blob of its own type."""
    config = Blob(
        "application/vnd.cncf.model.config.v1+json",
        json.dumps({"descriptor": {"name": repository}, "modelfs": {"type": "layers"}}).encode(),
    )
    return push_artifact(
        registry,
        repository,
        "blob-per-file",
        config,
        [Blob("application/vnd.cncf.model.weight.v1.raw", data) for data in files.values()],
        artifact_type="application/vnd.cncf.model.manifest.v1+json",
    )


def image_of_files(
    registry: LocalRegistry, repository: str, tag: str, source: Path, work: Path
) -> str:
    """An OCI image whose root holds the files of `source` (umoci: tar layers and an image
    config), pushed with skopeo; its digest."""
    layout = work / "layout"
    shutil.rmtree(layout, ignore_errors=True)
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:{tag}")
    bundle = work / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle))
    shutil.copytree(source, bundle / "rootfs", dirs_exist_ok=True)
    run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
    return registry.push_layout(layout, tag, repository)

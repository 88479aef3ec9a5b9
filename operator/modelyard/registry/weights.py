"""Will a node mount these weights as the files they hold?

A Kubernetes image volume is unpacked like a container image: the runtime reads the image config
for its layers' diff IDs and applies each tar layer. What ML tooling often pushes instead is not
refused by the node, it goes wrong quietly (seen with containerd 2.4):

- an artifact whose config is OCI's empty config (oras's default) never mounts ("mismatched
  image rootfs and manifest layers"), and all such artifacts share one image ID on a node, so
  one pod may be given another's files;
- an artifact whose files are blobs of their own media types (a common ML layout, CNCF
  ModelPack's too) mounts as an EMPTY directory, without any error;
- an index makes the node pick a platform, which weights have none of.

So the operator reads the manifest and the config before any pod refers to the weights and
refuses those shapes, saying how to repackage them.
"""

from __future__ import annotations

import json
from typing import Any

from modelyard.registry.http import Failure, RegistryError
from modelyard.registry.oci import OciClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
IMAGE_CONFIGS = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
TAR_LAYERS = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
)
#: An image config is a few KiB; one listing thousands of layers is still far below this.
MAX_CONFIG = 1024 * 1024

REPACKAGE = (
    "push the files as an image instead: tar layers and an image config (for example "
    "`umoci init`, `umoci new`, `umoci insert` and `skopeo copy`, or a Dockerfile FROM scratch "
    "that COPYs them)"
)


def shape_problem(manifest: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """Why a node would not mount these weights as their files, or None when it would.
    `config` is the image config the manifest names (None when it names no image config)."""
    media_type = manifest.get("mediaType") or ""
    if media_type in INDEXES:
        return (
            "an image index, from which a node picks one platform's image; push the weights as "
            "one image manifest"
        )
    if media_type and media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        return f"a manifest of media type {media_type}, not an image manifest; {REPACKAGE}"
    config_type = str((manifest.get("config") or {}).get("mediaType") or "")
    if config_type == EMPTY_CONFIG:
        return (
            "an artifact with OCI's empty config: a node never mounts it (and all such "
            f"artifacts share one image ID on a node, so a pod could get another's files); "
            f"{REPACKAGE}"
        )
    if config_type not in IMAGE_CONFIGS:
        kind = config_type or "missing"
        return f"an artifact whose config is {kind}, not an image config; {REPACKAGE}"
    layers = manifest.get("layers") or []
    if not layers:
        return "an image with no layers: it holds no files"
    odd = sorted({str(layer.get("mediaType")) for layer in layers} - TAR_LAYERS)
    if odd:
        return (
            f"files stored as blobs of media type {', '.join(odd)}, not tar layers: a node "
            f"mounts an empty directory without any error; {REPACKAGE}"
        )
    rootfs = (config or {}).get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") or []
    if rootfs.get("type") != "layers" or len(diff_ids) != len(layers):
        return (
            f"an image whose config lists {len(diff_ids)} layer diff IDs for {len(layers)} "
            "layers: a node refuses to mount it (mismatched image rootfs and manifest layers); "
            f"{REPACKAGE}"
        )
    return None


async def check_shape(client: OciClient, repository: str, digest: str) -> str | None:
    """`shape_problem` of the weights as the registry holds them. Registry failures raise
    RegistryError; a manifest or config that is not JSON is a problem of the weights."""
    body = await client.manifest(repository, digest)
    if body is None:
        # Found a moment ago by the verification: gone since, which the next check says.
        raise RegistryError(
            Failure.UNREACHABLE, f"{repository}@{digest} went away while read", temporary=True
        )
    try:
        manifest = json.loads(body)
    except ValueError:
        return "a manifest that is not JSON"
    if not isinstance(manifest, dict):
        return "a manifest that is not a JSON object"
    descriptor = manifest.get("config") or {}
    config: dict[str, Any] | None = None
    if descriptor.get("mediaType") in IMAGE_CONFIGS and descriptor.get("digest"):
        try:
            config = json.loads(
                await client.blob(repository, str(descriptor["digest"]), MAX_CONFIG)
            )
        except ValueError:
            return "an image config that is not JSON"
        if not isinstance(config, dict):
            return "an image config that is not a JSON object"
    return shape_problem(manifest, config)

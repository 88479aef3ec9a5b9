"""What releases that ran on kopf left on objects, and must not outlive them.

Those releases put a finalizer of kopf's on templates, Registries and ModelVersions. Nothing
acts on it any more, so an object being deleted would wait for it for ever: each of those
passes takes it off first.
"""

from __future__ import annotations

from modelyard.kube import Kube, Manifest

LEGACY_FINALIZER = "modelyard.dev/kopf-finalizer"


async def release_legacy_finalizer(body: Manifest, kube: Kube) -> Manifest:
    """An object being deleted loses kopf's old finalizer; the object as it is afterwards."""
    metadata = body.get("metadata") or {}
    finalizers = list(metadata.get("finalizers") or [])
    if metadata.get("deletionTimestamp") and LEGACY_FINALIZER in finalizers:
        finalizers.remove(LEGACY_FINALIZER)
        return await kube.set_finalizers(
            str(body.get("apiVersion")),
            str(body.get("kind")),
            metadata.get("namespace"),
            metadata["name"],
            finalizers=finalizers,
            resource_version=metadata.get("resourceVersion"),
        )
    return body


__all__ = ["LEGACY_FINALIZER", "release_legacy_finalizer"]

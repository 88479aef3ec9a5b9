"""Is a published image what its ModelVersion says it is?

The digest must exist in the repository, and the tag, when one is given, must point to that very
digest. The answer says which, with both digests when they differ, so a model owner can see at a
glance whether someone re-pushed the tag or the manifest was never pushed.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.registry.oci import OciClient, RegistryError


class Verdict:
    """What verification found, spelt as the condition reason it becomes."""

    VERIFIED = "DigestVerified"
    MISMATCH = "DigestMismatch"
    NOT_FOUND = "DigestNotFound"


@dataclass(frozen=True)
class Verification:
    reason: str
    message: str
    #: What the tag points to now (None without a tag, or when it does not exist).
    tag_digest: str | None = None
    temporary: bool = False

    @property
    def verified(self) -> bool:
        return self.reason == Verdict.VERIFIED


async def verify(client: OciClient, repository: str, digest: str, tag: str | None) -> Verification:
    where = f"{client.endpoint.host}/{repository}"
    try:
        found = await client.resolve(repository, digest)
        tag_digest = await client.resolve(repository, tag) if tag else None
    except RegistryError as error:
        return Verification(error.reason, error.message, temporary=error.temporary)
    if found is None:
        if tag is not None and tag_digest is not None:
            # Most often a re-pushed image: say what the tag holds now, next to what was published.
            message = (
                f"{where} has no manifest {digest}; tag {tag} points to {tag_digest}, "
                f"but the version says {digest}"
            )
        elif tag is not None:
            message = f"{where} has neither the manifest {digest} nor the tag {tag}"
        else:
            message = f"{where} has no manifest {digest}"
        return Verification(Verdict.NOT_FOUND, message, tag_digest)
    if tag is not None and tag_digest is None:
        return Verification(
            Verdict.MISMATCH, f"{where} has no tag {tag} (the digest {digest} exists)"
        )
    if tag is not None and tag_digest != digest:
        return Verification(
            Verdict.MISMATCH,
            f"tag {tag} of {where} points to {tag_digest}, but the version says {digest}",
            tag_digest,
        )
    suffix = f" and tag {tag} points to it" if tag else ""
    return Verification(Verdict.VERIFIED, f"{where}@{digest} exists{suffix}", tag_digest)

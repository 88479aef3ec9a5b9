"""Is a published image what its ModelVersion says it is? Is an MLflow version there and READY?

The digest must exist in the repository, and the tag, when one is given, must point to that very
digest. The answer says which, with both digests when they differ, so a model owner can see at a
glance whether someone re-pushed the tag or the manifest was never pushed.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.registry.http import RegistryError
from modelyard.registry.mlflow import MlflowClient, RegisteredVersion, Status
from modelyard.registry.oci import OciClient


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


class MlflowVerdict:
    """What verifying an MLflow version found, spelt as the condition reason it becomes."""

    VERIFIED = "VersionVerified"
    NOT_FOUND = "VersionNotFound"
    ALIAS_NOT_FOUND = "AliasNotFound"
    PENDING = "VersionPending"
    FAILED = "VersionFailed"


@dataclass(frozen=True)
class MlflowVerification:
    reason: str
    message: str
    #: The version verified (the pinned one, or the one just resolved).
    found: RegisteredVersion | None = None
    #: The version the alias points to now (None without an alias, or when it is gone).
    alias_version: str | None = None
    temporary: bool = False

    @property
    def verified(self) -> bool:
        return self.reason == MlflowVerdict.VERIFIED


async def verify_mlflow(
    client: MlflowClient,
    name: str,
    *,
    version: str | None,
    alias: str | None,
    pinned: str | None = None,
) -> MlflowVerification:
    """Does the registered model version exist and is it READY in MLflow?

    `pinned` is the version number an alias resolved to at first verification: from then on
    that number is what is verified, and the alias is only looked at to report a move.
    """
    where = f"MLflow model {name!r} on {client.endpoint.host}"
    try:
        alias_now = await client.by_alias(name, alias) if alias else None
        number = pinned or version or (alias_now.version if alias_now else None)
        if number is None:
            return MlflowVerification(
                MlflowVerdict.ALIAS_NOT_FOUND, f"{where} has no alias {alias!r}"
            )
        found = (
            alias_now
            if alias_now is not None and alias_now.version == number
            else await client.version(name, number)
        )
    except RegistryError as error:
        return MlflowVerification(error.reason, error.message, temporary=error.temporary)
    alias_version = alias_now.version if alias_now else None
    if found is None:
        return MlflowVerification(
            MlflowVerdict.NOT_FOUND,
            f"{where} has no version {number}",
            alias_version=alias_version,
        )
    if found.status == Status.PENDING:
        return MlflowVerification(
            MlflowVerdict.PENDING,
            f"{found.model_uri} is still being registered in MLflow ({found.status})",
            found,
            alias_version,
            temporary=True,
        )
    if found.status != Status.READY:
        return MlflowVerification(
            MlflowVerdict.FAILED,
            f"{found.model_uri} is {found.status} in MLflow, not READY",
            found,
            alias_version,
        )
    run = f" (run {found.run_id})" if found.run_id else ""
    return MlflowVerification(
        MlflowVerdict.VERIFIED,
        f"{found.model_uri} is READY on {client.endpoint.host}{run}",
        found,
        alias_version,
    )

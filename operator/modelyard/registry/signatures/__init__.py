"""Who signed an image: cosign signatures, read from the registry that holds the image.

cosign stores a signature next to the image in one of two ways, and both are read:

- the `sha256-<hex>.sig` tag: an OCI manifest whose layers are "simple signing" payloads (JSON
  naming the signed manifest's digest), each with its signature in an annotation;
- an OCI 1.1 referrer of the image (asked with the referrers API, or through the
  `sha256-<hex>` tag where a registry has no such API) holding a Sigstore bundle: a DSSE
  envelope around an in-toto statement whose subject is the image's digest.

A signature counts only when a trusted public key verifies it *and* what it signed names the
very digest asked about: a valid signature copied from another image, or a referrer that points
here but signed something else, is refused.

The cryptography is pyca/cryptography's (OpenSSL underneath): ECDSA (P-256, as `cosign
generate-key-pair` writes keys; P-384, P-521), Ed25519 and RSA (PKCS#1 v1.5 and PSS) public keys
in PEM; PyCryptodome's only for Ed25519ph, the variant cosign signs with, which OpenSSL's Python
binding lacks. Keyless signatures (Fulcio certificates and Rekor entries) are not read: they need a
trusted root and a transparency log, which a Registry's policy does not name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modelyard.registry.http import RegistryError
from modelyard.registry.oci import OciClient
from modelyard.registry.signatures.formats import Signed, bundle_signatures
from modelyard.registry.signatures.keys import KeyInvalid, Trust, TrustedKey, load_key, trust_of
from modelyard.registry.signatures.reading import (
    MAX_SIGNATURE_BYTES,
    MAX_SIGNATURES,
    Budget,
    referrer_signatures,
    tag_signatures,
)


class SignatureVerdict:
    """What checking an image's signatures found, spelt as the condition reason it becomes."""

    VERIFIED = "SignatureVerified"
    MISSING = "SignatureMissing"
    INVALID = "SignatureInvalid"
    KEY_NOT_FOUND = "KeyNotFound"


@dataclass(frozen=True)
class SignatureCheck:
    reason: str
    message: str
    #: The key that verified a signature of this digest, as the status names it.
    signer: str | None = None
    temporary: bool = False

    @property
    def verified(self) -> bool:
        return self.reason == SignatureVerdict.VERIFIED


async def check_signatures(
    client: OciClient,
    repository: str,
    digest: str,
    keys: Sequence[TrustedKey],
    key_problems: Iterable[str] = (),
) -> SignatureCheck:
    """Is `repository@digest` signed by one of `keys`? `key_problems` say why keys the policy
    names could not be read."""
    problems = list(key_problems)
    where = f"{client.endpoint.host}/{repository}@{digest}"
    if not keys:
        return SignatureCheck(
            SignatureVerdict.KEY_NOT_FOUND,
            "no public key of the signature policy could be read: " + "; ".join(problems),
        )
    budget = Budget()
    try:
        found = [
            *await tag_signatures(client, repository, digest, budget),
            *await referrer_signatures(client, repository, digest, budget),
        ]
    except RegistryError as error:
        return SignatureCheck(error.reason, error.message, temporary=error.temporary)
    if not found:
        unread = budget.said()
        return SignatureCheck(
            SignatureVerdict.MISSING,
            f"{where} has no cosign signature (looked for the tag "
            f"{digest.replace(':', '-')}.sig and OCI referrers)"
            + (f"; {unread}" if unread else ""),
        )
    # Up to MAX_SIGNATURES times 16 keys: off the event loop, which every Model's pass shares.
    return await asyncio.to_thread(
        lambda: _verdict(found, keys, digest, where=where, problems=problems, budget=budget)
    )


def _verdict(
    found: Sequence[Signed],
    keys: Sequence[TrustedKey],
    digest: str,
    *,
    where: str,
    problems: Sequence[str],
    budget: Budget,
) -> SignatureCheck:
    copied: list[str] = []
    for signed in found:
        for key in keys:
            if not key.verifies(signed.signature, signed.message):
                continue
            if signed.names == digest:
                return SignatureCheck(
                    SignatureVerdict.VERIFIED,
                    f"{where} is signed by {key} ({signed.where})",
                    signer=key.name,
                )
            copied.append(
                f"{signed.where} is signed by {key.name} but names "
                f"{signed.names or 'no image digest'}, not this image"
            )
    trusted = ", ".join(key.name for key in keys)
    if copied:
        message = "; ".join(copied)
    else:
        message = (
            f"{len(found)} signature{'s' if len(found) != 1 else ''} of {where}, none by a "
            f"trusted key ({trusted})"
        )
    if budget.said():
        message += f"; {budget.said()}"
    if problems:
        message += "; keys not read: " + "; ".join(problems)
    return SignatureCheck(SignatureVerdict.INVALID, message)


__all__ = [
    "MAX_SIGNATURES",
    "MAX_SIGNATURE_BYTES",
    "KeyInvalid",
    "SignatureCheck",
    "SignatureVerdict",
    "Trust",
    "TrustedKey",
    "bundle_signatures",
    "check_signatures",
    "load_key",
    "trust_of",
]

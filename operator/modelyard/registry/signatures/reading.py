"""Fetching an image's signatures from its registry within a budget: whoever may push to the
repository may add thousands, and the operator is shared by every team, so at most
MAX_SIGNATURES are fetched and verified, none larger than MAX_SIGNATURE_BYTES, and the
verdict says what was left unread."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.registry.http import RegistryError
from modelyard.registry.oci import OciClient
from modelyard.registry.signatures.formats import (
    BUNDLE_PREFIX,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    Signed,
    b64,
    bundle_signatures,
    simple_signing_digest,
)

#: Signatures read for one image at most, across the .sig tag, the referrers and the entries of
#: each bundle's envelope. cosign adds one per `cosign sign`, so a real image has a few; whoever
#: can push to the repository can add thousands, and the operator is shared by every team:
#: beyond this many, the rest are neither fetched nor verified, and the verdict says so.
MAX_SIGNATURES = 32


#: One signature's payload or bundle at most (a simple-signing payload is under 1 KiB, a bundle
#: a few KiB): a larger one is not fetched. With MAX_SIGNATURES, what one check holds in memory
#: is bounded (8 MiB).
MAX_SIGNATURE_BYTES = 256 * 2**10


@dataclass
class Budget:
    """What one check may still read: signatures, and what was left unread and why."""

    left: int = MAX_SIGNATURES
    unread: int = 0
    too_large: int = 0
    #: Signatures whose bytes could not be had (another digest, too large for what they said).
    broken: int = 0
    #: Referrer manifests still to be fetched: each costs a request, bundle or not.
    manifests: int = MAX_SIGNATURES

    def take(self, layer: Mapping[str, Any]) -> bool:
        """Whether to fetch this signature's blob."""
        if self.left <= 0:
            self.unread += 1
            return False
        size = layer.get("size")
        if isinstance(size, int) and size > MAX_SIGNATURE_BYTES:
            self.too_large += 1
            return False
        self.left -= 1
        return True

    def within(self, signed: list[Signed]) -> list[Signed]:
        """The signatures of one bundle the budget still allows. Its blob was taken for the
        first; a DSSE envelope may list any number more, each verified against every key, so
        they count as signatures too."""
        allowed = 1 + max(self.left, 0)
        self.left -= max(min(len(signed), allowed) - 1, 0)
        self.unread += max(len(signed) - allowed, 0)
        return signed[:allowed]

    def said(self) -> str:
        words = []
        if self.unread:
            words.append(
                f"{self.unread} more signature{'s' if self.unread != 1 else ''} not read "
                f"(at most {MAX_SIGNATURES} are)"
            )
        if self.too_large:
            words.append(
                f"{self.too_large} larger than {MAX_SIGNATURE_BYTES // 2**10} KiB not read"
            )
        if self.broken:
            words.append(f"{self.broken} could not be read")
        return "; ".join(words)

    async def fetch(self, client: OciClient, repository: str, digest: str) -> bytes | None:
        """A signature's bytes; None (counted) when the registry cannot give them as they
        were declared: one bad signature must not hide a good one. An outage still fails the
        whole check (it is temporary)."""
        try:
            return await client.blob(repository, digest, MAX_SIGNATURE_BYTES)
        except RegistryError as error:
            if error.temporary:
                raise
            self.broken += 1
            return None


async def tag_signatures(
    client: OciClient, repository: str, digest: str, budget: Budget
) -> list[Signed]:
    tag = digest.replace(":", "-") + ".sig"
    manifest = await client.manifest(repository, tag)
    if manifest is None:
        return []
    found: list[Signed] = []
    for layer in _layers(manifest):
        annotations = layer.get("annotations") or {}
        signature = b64(annotations.get(SIGNATURE_ANNOTATION))
        if signature is None or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        if not budget.take(layer):
            continue
        payload = await budget.fetch(client, repository, str(layer.get("digest")))
        if payload is not None:
            names = simple_signing_digest(payload)
            found.append(Signed(f"tag {tag}", payload, signature, names))
    return found


def _layers(manifest: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(manifest)
    except ValueError:
        return []
    layers = document.get("layers") if isinstance(document, dict) else None
    return [layer for layer in layers or [] if isinstance(layer, dict)]


async def referrer_signatures(
    client: OciClient, repository: str, digest: str, budget: Budget
) -> list[Signed]:
    found: list[Signed] = []
    for descriptor in await client.referrers(repository, digest):
        artifact = str(descriptor.get("artifactType") or "")
        if not artifact.startswith(BUNDLE_PREFIX):
            continue
        if budget.left <= 0 or budget.manifests <= 0:
            budget.unread += 1  # its manifest is not even fetched
            continue
        budget.manifests -= 1
        manifest_digest = str(descriptor.get("digest"))
        manifest = await client.manifest(repository, manifest_digest)
        if manifest is None:
            continue
        for layer in _layers(manifest):
            if not str(layer.get("mediaType") or "").startswith(BUNDLE_PREFIX):
                continue
            if not budget.take(layer):
                continue
            bundle = await budget.fetch(client, repository, str(layer.get("digest")))
            if bundle is not None:
                where = f"referrer {manifest_digest[:19]}…"
                found.extend(budget.within(bundle_signatures(bundle, where, digest)))
    return found

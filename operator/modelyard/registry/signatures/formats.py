"""What cosign writes, read without trusting it: simple-signing payloads, Sigstore bundles
(a DSSE envelope around an in-toto statement), and what each says it signed. No cryptography
here: a signature is only bytes until `keys` verifies it."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

#: The media types cosign writes, and what they hold.
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"


IN_TOTO = "application/vnd.in-toto+json"


#: What cosign's statement of a signature says; an attestation (an SBOM, a provenance) signed
#: by the same key is a statement about the image, not a signature of it.
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


@dataclass(frozen=True)
class Signed:
    """One signature found for the image: what was signed, and what it says it signed."""

    where: str
    message: bytes
    signature: bytes
    #: The digest the signed payload names (None when the payload names none we can read).
    names: str | None


def simple_signing_digest(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
        digest = document["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(payload: bytes) -> tuple[str | None, list[str]]:
    """An in-toto statement's predicate type and the sha256 digests of its subjects."""
    try:
        statement = json.loads(payload)
        subjects = statement.get("subject") or []
        predicate = statement.get("predicateType")
        return (
            predicate if isinstance(predicate, str) else None,
            [
                f"sha256:{subject['digest']['sha256']}"
                for subject in subjects
                if isinstance(subject, dict) and "sha256" in (subject.get("digest") or {})
            ],
        )
    except (ValueError, AttributeError, TypeError, KeyError):
        return None, []


def b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def bundle_signatures(bundle: bytes, where: str, digest: str) -> list[Signed]:
    """The signatures a Sigstore bundle carries, with what each signed."""
    try:
        document = json.loads(bundle)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    found: list[Signed] = []
    envelope = document.get("dsseEnvelope")
    if isinstance(envelope, dict):
        payload = b64(envelope.get("payload"))
        payload_type = envelope.get("payloadType")
        if payload is not None and isinstance(payload_type, str):
            predicate, subjects = statement(payload) if payload_type == IN_TOTO else (None, [])
            if predicate is not None and predicate != COSIGN_SIGN_PREDICATE:
                # An attestation (an SBOM, an evaluation) says something about the image; it
                # is not a signature of it, whoever signed it.
                return []
            names = digest if digest in subjects else (subjects[0] if subjects else None)
            # One message for every signature of the envelope: they all sign the same bytes.
            message = pae(payload_type, payload)
            for entry in envelope.get("signatures") or []:
                signature = b64((entry or {}).get("sig")) if isinstance(entry, dict) else None
                if signature is not None:
                    found.append(Signed(where, message, signature, names))
    return found

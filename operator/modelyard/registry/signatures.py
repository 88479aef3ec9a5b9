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
import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from Crypto.Hash import SHA512
from Crypto.Signature import eddsa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from modelyard.api.v1alpha1 import SignatureMode, SignaturePolicy
from modelyard.registry.credentials import SecretInvalid, secret_text
from modelyard.registry.oci import OciClient, RegistryError

#: The media types cosign writes, and what they hold.
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO = "application/vnd.in-toto+json"
#: What cosign's statement of a signature says; an attestation (an SBOM, a provenance) signed
#: by the same key is a statement about the image, not a signature of it.
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
#: Signatures read for one image at most, across the .sig tag, the referrers and the entries of
#: each bundle's envelope. cosign adds one per `cosign sign`, so a real image has a few; whoever
#: can push to the repository can add thousands, and the operator is shared by every team:
#: beyond this many, the rest are neither fetched nor verified, and the verdict says so.
MAX_SIGNATURES = 32
#: One signature's payload or bundle at most (a simple-signing payload is under 1 KiB, a bundle
#: a few KiB): a larger one is not fetched. With MAX_SIGNATURES, what one check holds in memory
#: is bounded (8 MiB).
MAX_SIGNATURE_BYTES = 256 * 2**10

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class SignatureVerdict:
    """What checking an image's signatures found, spelt as the condition reason it becomes."""

    VERIFIED = "SignatureVerified"
    MISSING = "SignatureMissing"
    INVALID = "SignatureInvalid"
    KEY_NOT_FOUND = "KeyNotFound"


class KeyInvalid(Exception):  # noqa: N818 -- a verdict on user input, shown in a status
    """The text is not a PEM public key of a kind cosign signs with."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key of a signature policy, and the name a status gives it."""

    name: str
    algorithm: str
    public_key: PublicKey

    def verifies(self, signature: bytes, message: bytes) -> bool:
        key = self.public_key
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                return _ed25519_verifies(key, signature, message)
            if isinstance(key, ec.EllipticCurvePublicKey):
                # cosign signs with SHA-256 whatever the curve; other tools match the curve.
                for digest in _ec_hashes(key.curve):
                    try:
                        key.verify(signature, message, ec.ECDSA(digest))
                        return True
                    except InvalidSignature:
                        continue
                return False
            for scheme in (
                padding.PKCS1v15(),
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
            ):
                try:
                    key.verify(signature, message, scheme, hashes.SHA256())
                    return True
                except InvalidSignature:
                    continue
            return False
        except (InvalidSignature, ValueError, UnsupportedAlgorithm):
            return False

    def der(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __str__(self) -> str:
        return f"{self.name} ({self.algorithm})"


def _ed25519_verifies(key: ed25519.Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """cosign signs with Ed25519ph (the message's SHA-512, RFC 8032 §5.1), which pyca/cryptography
    does not offer; PyCryptodome does. Plain Ed25519 is accepted too (other signers use it)."""
    try:
        key.verify(signature, message)
        return True
    except InvalidSignature:
        pass
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        eddsa.new(eddsa.import_public_key(raw), "rfc8032").verify(SHA512.new(message), signature)
        return True
    except ValueError:
        return False


def _ec_hashes(curve: ec.EllipticCurve) -> list[hashes.HashAlgorithm]:
    matched: dict[str, hashes.HashAlgorithm] = {
        "secp384r1": hashes.SHA384(),
        "secp521r1": hashes.SHA512(),
    }
    return [hashes.SHA256(), *([matched[curve.name]] if curve.name in matched else [])]


def load_key(name: str, pem: str | bytes) -> TrustedKey:
    """A trusted key from PEM text; raises KeyInvalid saying what is wrong with it."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if b"PRIVATE KEY" in data:
            raise KeyInvalid(
                f"{name} holds a private key; give the public key (cosign.pub), never the "
                "private one"
            ) from None
        raise KeyInvalid(f"{name} is not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        if key.curve.name not in curves:
            raise KeyInvalid(
                f"{name} is an ECDSA key on {key.curve.name}, which cosign does not use"
            )
        return TrustedKey(name, f"ECDSA {curves[key.curve.name]}", key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return TrustedKey(name, "Ed25519", key)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise KeyInvalid(
                f"{name} is an RSA key of {key.key_size} bits; at least 2048 are needed"
            )
        return TrustedKey(name, f"RSA {key.key_size}", key)
    raise KeyInvalid(f"{name} is a {type(key).__name__}, not an ECDSA, Ed25519 or RSA key")


@dataclass(frozen=True)
class Trust:
    """A Registry's signature policy as the operator holds it: the keys it could read, why it
    could not read the others, and whether an unsigned image may run anyway."""

    enforce: bool
    keys: tuple[TrustedKey, ...]
    problems: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """Changes whenever what would be trusted changes (a key added, removed or replaced)."""
        digest = hashlib.sha256(repr((self.enforce, self.problems)).encode())
        for key in self.keys:
            digest.update(key.name.encode() + b"\0" + key.der())
        return digest.hexdigest()

    def describe(self) -> str:
        keys = ", ".join(str(key) for key in self.keys) or "none"
        mode = "Enforce" if self.enforce else "Warn"
        return f"{mode}; {len(self.keys)} public key{'s' if len(self.keys) != 1 else ''}: {keys}"


def trust_of(policy: SignaturePolicy, secrets: Mapping[str, Mapping[str, Any] | str]) -> Trust:
    """A policy with the keys its Secrets hold, read the same way by the operator and
    `modelyard verify`. `secrets`: each Secret the policy names, or why it cannot be had. A
    key that cannot be read is named in `problems` and left out; the others still verify."""
    keys: list[TrustedKey] = []
    problems: list[str] = []
    for reference in policy.public_keys:
        found = secrets.get(reference.secret_name, f"Secret {reference.secret_name} is missing")
        if isinstance(found, str):
            problems.append(found)
            continue
        try:
            pem = secret_text(dict(found), reference.key)
            if pem is None:
                problems.append(f"Secret {reference.secret_name} has no key {reference.key}")
                continue
            keys.append(load_key(f"{reference.secret_name}/{reference.key}", pem))
        except (SecretInvalid, KeyInvalid) as error:
            problems.append(f"Secret {reference.secret_name}: {error}")
    return Trust(policy.mode is SignatureMode.ENFORCE, tuple(keys), tuple(problems))


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


@dataclass(frozen=True)
class _Signed:
    """One signature found for the image: what was signed, and what it says it signed."""

    where: str
    message: bytes
    signature: bytes
    #: The digest the signed payload names (None when the payload names none we can read).
    names: str | None


def _simple_signing_digest(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
        digest = document["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def _pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _statement(payload: bytes) -> tuple[str | None, list[str]]:
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


def _b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def bundle_signatures(bundle: bytes, where: str, digest: str) -> list[_Signed]:
    """The signatures a Sigstore bundle carries, with what each signed."""
    try:
        document = json.loads(bundle)
    except ValueError:
        return []
    if not isinstance(document, dict):
        return []
    found: list[_Signed] = []
    envelope = document.get("dsseEnvelope")
    if isinstance(envelope, dict):
        payload = _b64(envelope.get("payload"))
        payload_type = envelope.get("payloadType")
        if payload is not None and isinstance(payload_type, str):
            predicate, subjects = _statement(payload) if payload_type == IN_TOTO else (None, [])
            if predicate is not None and predicate != COSIGN_SIGN_PREDICATE:
                # An attestation (an SBOM, an evaluation) says something about the image; it
                # is not a signature of it, whoever signed it.
                return []
            names = digest if digest in subjects else (subjects[0] if subjects else None)
            # One message for every signature of the envelope: they all sign the same bytes.
            message = _pae(payload_type, payload)
            for entry in envelope.get("signatures") or []:
                signature = _b64((entry or {}).get("sig")) if isinstance(entry, dict) else None
                if signature is not None:
                    found.append(_Signed(where, message, signature, names))
    return found


@dataclass
class _Budget:
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

    def within(self, signed: list[_Signed]) -> list[_Signed]:
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


async def _tag_signatures(
    client: OciClient, repository: str, digest: str, budget: _Budget
) -> list[_Signed]:
    tag = digest.replace(":", "-") + ".sig"
    manifest = await client.manifest(repository, tag)
    if manifest is None:
        return []
    found: list[_Signed] = []
    for layer in _layers(manifest):
        annotations = layer.get("annotations") or {}
        signature = _b64(annotations.get(SIGNATURE_ANNOTATION))
        if signature is None or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        if not budget.take(layer):
            continue
        payload = await budget.fetch(client, repository, str(layer.get("digest")))
        if payload is not None:
            names = _simple_signing_digest(payload)
            found.append(_Signed(f"tag {tag}", payload, signature, names))
    return found


def _layers(manifest: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(manifest)
    except ValueError:
        return []
    layers = document.get("layers") if isinstance(document, dict) else None
    return [layer for layer in layers or [] if isinstance(layer, dict)]


async def _referrer_signatures(
    client: OciClient, repository: str, digest: str, budget: _Budget
) -> list[_Signed]:
    found: list[_Signed] = []
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
    budget = _Budget()
    try:
        found = [
            *await _tag_signatures(client, repository, digest, budget),
            *await _referrer_signatures(client, repository, digest, budget),
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
    found: Sequence[_Signed],
    keys: Sequence[TrustedKey],
    digest: str,
    *,
    where: str,
    problems: Sequence[str],
    budget: _Budget,
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

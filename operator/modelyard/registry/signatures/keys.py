"""The public keys of a signature policy, and verifying with them: the one module that does
cryptography (an import-linter contract keeps it so). pyca/cryptography (OpenSSL) does ECDSA,
RSA and Ed25519; PyCryptodome only Ed25519ph, the variant cosign signs with, which OpenSSL's
Python binding lacks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from Crypto.Hash import SHA512
from Crypto.Signature import eddsa
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from modelyard.api.v1alpha1 import SignatureMode, SignaturePolicy
from modelyard.registry.credentials import SecretInvalid, secret_text

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


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

    def pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

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

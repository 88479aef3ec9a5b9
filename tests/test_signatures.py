"""Signatures as the real cosign writes them, in a real registry, read by the operator's code.

Every case signs with `cosign` built from its Go module (tests/support/cosign.py) in both of its
formats — the `sha256-<hex>.sig` tag and a Sigstore bundle stored as an OCI 1.1 referrer (this
registry has no referrers API, so cosign writes, and modelyard reads, the referrers tag) — and
asks `check_signatures`, which the operator and `modelyard verify` both use.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.registry.http import Endpoint
from modelyard.registry.oci import OciClient
from modelyard.registry.signatures import (
    KeyInvalid,
    SignatureVerdict,
    TrustedKey,
    check_signatures,
    load_key,
)
from support import cosign
from support.registry import LocalRegistry, require_tools

REPOSITORY = "acme/awesome-llm"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def signer(tmp_path: Path) -> cosign.Cosign:
    return cosign.Cosign(cosign.binary(), tmp_path / "cosign")


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalRegistry]:
    require_tools()
    registry = await LocalRegistry(tmp_path / "registry").start()
    yield registry
    await registry.stop()


async def checked(
    registry: LocalRegistry, digest: str, *keys: TrustedKey
) -> tuple[str, str, str | None]:
    async with OciClient(Endpoint(registry.url)) as client:
        found = await check_signatures(client, REPOSITORY, digest, list(keys))
    return found.reason, found.message, found.signer


def trusted(pair: cosign.KeyPair, name: str = "cosign-pub/cosign.pub") -> TrustedKey:
    return load_key(name, pair.public_pem)


def move_manifest(registry: LocalRegistry, source_tag: str, target_tag: str) -> None:
    """Put the manifest under one tag under another, byte for byte (as `crane tag` would)."""
    base = f"{registry.url}/v2/{REPOSITORY}/manifests"
    request = urllib.request.Request(f"{base}/{source_tag}", headers={"Accept": MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    put = urllib.request.Request(
        f"{base}/{target_tag}", data=body, method="PUT", headers={"Content-Type": MANIFEST}
    )
    urllib.request.urlopen(put, timeout=10).close()


@pytest.mark.parametrize("bundle", [False, True], ids=["sig-tag", "bundle-referrer"])
async def test_signed_images_verify_and_name_their_signer(
    signer: cosign.Cosign, local: LocalRegistry, bundle: bool
) -> None:
    ecdsa = signer.generate_key_pair("owner")
    ed25519 = signer.import_ed25519("owner-ed25519")
    first = local.push(REPOSITORY, "1.0.0", "weights one")
    second = local.push(REPOSITORY, "1.1.0", "weights two")
    signer.sign(ecdsa, f"{local.host}/{REPOSITORY}@{first}", bundle=bundle)
    signer.sign(ed25519, f"{local.host}/{REPOSITORY}@{second}", bundle=bundle)

    reason, message, who = await checked(local, first, trusted(ecdsa))
    assert (reason, who) == (SignatureVerdict.VERIFIED, "cosign-pub/cosign.pub")
    assert "signed by cosign-pub/cosign.pub (ECDSA P-256)" in message
    assert ("referrer" if bundle else ".sig") in message

    # cosign signs with Ed25519ph; one policy holding both keys verifies both images.
    both = (trusted(ecdsa), trusted(ed25519, "release-key/ed25519.pub"))
    reason, message, who = await checked(local, second, *both)
    assert (reason, who) == (SignatureVerdict.VERIFIED, "release-key/ed25519.pub")
    assert "(Ed25519)" in message


async def test_unsigned_wrong_key_and_copied_signatures_are_refused(
    signer: cosign.Cosign, local: LocalRegistry
) -> None:
    owner = signer.generate_key_pair("owner")
    stranger = signer.generate_key_pair("stranger")
    unsigned = local.push(REPOSITORY, "0.9.0", "never signed")
    signed = local.push(REPOSITORY, "1.0.0", "signed by the owner")
    by_stranger = local.push(REPOSITORY, "1.0.1", "signed by someone else")
    target = local.push(REPOSITORY, "1.0.2", "given a copied signature")
    attested = local.push(REPOSITORY, "1.0.3", "only attested")
    signer.sign(owner, f"{local.host}/{REPOSITORY}@{signed}", bundle=False)
    signer.sign(stranger, f"{local.host}/{REPOSITORY}@{by_stranger}", bundle=True)

    reason, message, who = await checked(local, unsigned, trusted(owner))
    assert (reason, who) == (SignatureVerdict.MISSING, None)
    assert unsigned.replace(":", "-") + ".sig" in message

    reason, message, _ = await checked(local, by_stranger, trusted(owner))
    assert reason == SignatureVerdict.INVALID
    assert "none by a trusted key (cosign-pub/cosign.pub)" in message

    # The owner's valid signature of another image, put where this image's would be: the key
    # verifies it, but it names the other digest.
    move_manifest(local, signed.replace(":", "-") + ".sig", target.replace(":", "-") + ".sig")
    reason, message, _ = await checked(local, target, trusted(owner))
    assert reason == SignatureVerdict.INVALID
    assert f"names {signed}, not this image" in message

    # An attestation by the owner's key is a statement about the image, not a signature of it.
    predicate = signer.home / "evaluation.json"
    predicate.write_text(json.dumps({"accuracy": 0.93}))
    signer.run(
        "attest",
        "--key",
        str(owner.private),
        "--predicate",
        str(predicate),
        "--type",
        "https://modelyard.dev/evaluation/v1",
        "--signing-config",
        str(signer.home / "signing-config.json"),
        "--trusted-root",
        str(signer.home / "trusted-root.json"),
        "--allow-http-registry",
        "--yes",
        f"{local.host}/{REPOSITORY}@{attested}",
    )
    assert (await checked(local, attested, trusted(owner)))[0] == SignatureVerdict.MISSING


async def test_a_moved_tag_leaves_the_pinned_digest_signed(
    signer: cosign.Cosign, local: LocalRegistry
) -> None:
    owner = signer.generate_key_pair("owner")
    pinned = local.push(REPOSITORY, "1.0.0", "the published weights")
    signer.sign(owner, f"{local.host}/{REPOSITORY}@{pinned}", bundle=True)
    moved_to = local.push(REPOSITORY, "1.0.0", "re-pushed over the tag, unsigned")
    assert moved_to != pinned
    assert (await checked(local, pinned, trusted(owner)))[0] == SignatureVerdict.VERIFIED
    assert (await checked(local, moved_to, trusted(owner)))[0] == SignatureVerdict.MISSING


async def test_no_readable_key_is_key_not_found(local: LocalRegistry) -> None:
    digest = local.push(REPOSITORY, "1.0.0", "weights")
    async with OciClient(Endpoint(local.url)) as client:
        found = await check_signatures(
            client, REPOSITORY, digest, [], ["Secret cosign-pub (public key) does not exist"]
        )
    assert found.reason == SignatureVerdict.KEY_NOT_FOUND
    assert "Secret cosign-pub (public key) does not exist" in found.message


def test_keys_are_read_as_cosign_writes_them(signer: cosign.Cosign) -> None:
    pair = signer.generate_key_pair("reader")
    assert load_key("k", pair.public_pem).algorithm == "ECDSA P-256"
    assert load_key("k", signer.import_ed25519("reader-ed").public_pem).algorithm == "Ed25519"
    with pytest.raises(KeyInvalid, match="holds a private key"):
        load_key("cosign-pub/cosign.pub", pair.private.read_text())
    with pytest.raises(KeyInvalid, match="is not a PEM public key"):
        load_key("cosign-pub/cosign.pub", "hello")


def release_files(
    registry: LocalRegistry, public_pem: str, versions: dict[str, str], mode: str = "Enforce"
) -> list[dict[str, Any]]:
    """What a model owner's pipeline holds: the Registry with its policy, the key's Secret and
    the ModelVersions it is about to apply."""
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cosign-pub", "namespace": "ml"},
            "stringData": {"cosign.pub": public_pem},
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local", "namespace": "ml"},
            "spec": {
                "url": registry.url,
                "signatures": {"mode": mode, "publicKeys": [{"secretName": "cosign-pub"}]},
            },
        },
    ]
    for number, digest in versions.items():
        documents.append(
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": f"awesome-llm-{number}", "namespace": "ml"},
                "spec": {
                    "model": "awesome-llm",
                    "version": number,
                    "registry": "local",
                    "repository": REPOSITORY,
                    "digest": digest,
                },
            }
        )
    return documents


def modelyard_verify(
    tmp_path: Path, documents: list[dict[str, Any]], *flags: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "verify", "-f", str(path), *flags],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_modelyard_verify_names_the_signer_or_the_cause(
    signer: cosign.Cosign, local: LocalRegistry, tmp_path: Path
) -> None:
    owner = signer.generate_key_pair("owner")
    stranger = signer.generate_key_pair("stranger")
    signed = local.push(REPOSITORY, "1.0.0", "signed weights")
    unsigned = local.push(REPOSITORY, "1.1.0", "unsigned weights")
    signer.sign(owner, f"{local.host}/{REPOSITORY}@{signed}", bundle=True)
    files = release_files(local, owner.public_pem, {"1.0.0": signed, "1.1.0": unsigned})

    result = modelyard_verify(tmp_path, files)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = dict(line.split(" (awesome-llm ", 1) for line in result.stdout.splitlines())
    assert lines["ok   ml/awesome-llm-1.0.0"].endswith(
        f"{local.host}/{REPOSITORY}@{signed} signed by cosign-pub/cosign.pub"
    )
    assert "SignatureMissing" in lines["FAIL ml/awesome-llm-1.1.0"]

    # --key: these keys instead of the manifests' — the stranger signed nothing here.
    result = modelyard_verify(tmp_path, files[:3], "--key", str(stranger.public))
    assert result.returncode == 1
    assert "FAIL ml/awesome-llm-1.0.0" in result.stdout and "SignatureInvalid" in result.stdout
    result = modelyard_verify(tmp_path, files[:3], "--key", str(owner.public))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"signed by {owner.public}" in result.stdout

    # Warn mode runs unsigned images, and the line says so without failing the pipeline.
    result = modelyard_verify(
        tmp_path, release_files(local, owner.public_pem, {"1.1.0": unsigned}, mode="Warn")
    )
    assert result.returncode == 0 and result.stdout.startswith("warn ml/awesome-llm-1.1.0")
    assert "SignatureMissing" in result.stdout

    # A key that is not there is one line, not a traceback.
    result = modelyard_verify(tmp_path, files[1:3])
    assert result.returncode == 1 and "KeyNotFound" in result.stdout
    assert "Secret cosign-pub is not among the files" in result.stdout
    assert "Traceback" not in result.stderr


async def test_modelyard_verify_checks_template_images_under_a_policy(
    signer: cosign.Cosign, local: LocalRegistry, tmp_path: Path
) -> None:
    owner = signer.generate_key_pair("owner")
    signed = local.push(REPOSITORY, "stable", "signed weights")
    unsigned = local.push(REPOSITORY, "nightly", "unsigned weights")
    signer.sign(owner, f"{local.host}/{REPOSITORY}@{signed}", bundle=False)

    def template(name: str, image: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelTemplate",
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {
                "modelType": "EMBEDDING",
                "image": {"registry": "local", "repository": REPOSITORY, **image},
                "resources": {"cpus": 1, "memory": "1Gi"},
            },
        }

    files = [
        *release_files(local, owner.public_pem, {}),
        template("by-tag", {"tag": "stable"}),
        template("by-digest", {"digest": unsigned}),
    ]
    result = modelyard_verify(tmp_path, files)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert f"ok   ml/by-tag (template): {local.host}/{REPOSITORY}@{signed} signed by" in "\n".join(
        lines
    )
    assert any(line.startswith("FAIL ml/by-digest (template): SignatureMissing") for line in lines)


def push_blob(registry: LocalRegistry, data: bytes) -> dict[str, Any]:
    """A blob put in the repository as any client with push rights may (a monolithic upload);
    its descriptor."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(
        f"{registry.url}/v2/{REPOSITORY}/blobs/uploads/", data=b"", method="POST"
    )
    with urllib.request.urlopen(start, timeout=10) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = registry.url + location
    joiner = "&" if "?" in location else "?"
    put = urllib.request.Request(
        f"{location}{joiner}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    urllib.request.urlopen(put, timeout=10).close()
    return {"digest": digest, "size": len(data)}


class CountingClient(OciClient):
    """The operator's registry client, counting the blobs it fetches."""

    blobs = 0

    async def blob(self, repository: str, digest: str, limit: int = 4 * 2**20) -> bytes:
        CountingClient.blobs += 1
        return await super().blob(repository, digest, limit)


async def test_a_flood_of_signatures_is_read_only_up_to_a_bound(
    signer: cosign.Cosign, local: LocalRegistry
) -> None:
    """Whoever may push to a repository may give an image a hundred signature layers, or one
    of many megabytes: the operator, shared by every team, reads 32 at most, none larger than
    256 KiB, and says what it left unread."""
    owner = signer.generate_key_pair("owner")
    image = local.push(REPOSITORY, "1.0.0", "flooded")
    config = push_blob(local, b"{}")
    layers = []
    for index in range(100):
        payload = json.dumps(
            {"critical": {"image": {"docker-manifest-digest": image}}, "optional": {"n": index}}
        ).encode()
        layers.append(
            {
                **push_blob(local, payload),
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "annotations": {"dev.cosignproject.cosign/signature": "bm90IGEgc2lnbmF0dXJl"},
            }
        )
    huge = push_blob(local, b"x" * (300 * 2**10))
    layers.insert(
        0,
        {
            **huge,
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "annotations": {"dev.cosignproject.cosign/signature": "bm90IGEgc2lnbmF0dXJl"},
        },
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {**config, "mediaType": "application/vnd.oci.image.config.v1+json"},
        "layers": layers,
    }
    put = urllib.request.Request(
        f"{local.url}/v2/{REPOSITORY}/manifests/{image.replace(':', '-')}.sig",
        data=json.dumps(manifest).encode(),
        method="PUT",
        headers={"Content-Type": MANIFEST},
    )
    urllib.request.urlopen(put, timeout=10).close()

    CountingClient.blobs = 0
    async with CountingClient(Endpoint(local.url)) as client:
        found = await check_signatures(client, REPOSITORY, image, [trusted(owner)])
    assert found.reason == SignatureVerdict.INVALID, found.message
    assert CountingClient.blobs == 32
    assert "68 more signatures not read (at most 32 are)" in found.message, found.message
    assert "1 larger than 256 KiB not read" in found.message, found.message


def put_manifest(registry: LocalRegistry, reference: str, document: dict[str, Any]) -> str:
    """A manifest or index put as any client with push rights may; its digest."""
    data = json.dumps(document).encode()
    put = urllib.request.Request(
        f"{registry.url}/v2/{REPOSITORY}/manifests/{reference}",
        data=data,
        method="PUT",
        headers={"Content-Type": document["mediaType"]},
    )
    urllib.request.urlopen(put, timeout=10).close()
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_a_bundle_listing_thousands_of_signatures_counts_each(
    signer: cosign.Cosign, local: LocalRegistry
) -> None:
    """One Sigstore bundle, well under the size bound, may list thousands of signatures in its
    DSSE envelope, each to be verified against every key: they count against the same bound
    of 32 as signatures stored one per blob, and the verdict says how many were left unread."""
    import base64  # noqa: PLC0415

    owner = signer.generate_key_pair("owner")
    image = local.push(REPOSITORY, "1.0.0", "one-bundle-many-signatures")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": REPOSITORY, "digest": {"sha256": image.removeprefix("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json"
    bundle = {
        "mediaType": bundle_type,
        "dsseEnvelope": {
            "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [
                {"sig": base64.b64encode(f"not a signature {n}".encode()).decode()}
                for n in range(2000)
            ],
        },
    }
    empty = push_blob(local, b"{}")
    referrer = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": bundle_type,
        "config": {**empty, "mediaType": "application/vnd.oci.empty.v1+json"},
        "layers": [{**push_blob(local, json.dumps(bundle).encode()), "mediaType": bundle_type}],
    }
    referrer_digest = put_manifest(local, "bundle", referrer)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MANIFEST,
                "digest": referrer_digest,
                "size": len(json.dumps(referrer).encode()),
                "artifactType": bundle_type,
            }
        ],
    }
    put_manifest(local, image.replace(":", "-"), index)

    async with OciClient(Endpoint(local.url)) as client:
        found = await check_signatures(client, REPOSITORY, image, [trusted(owner)])
    assert found.reason == SignatureVerdict.INVALID, found.message
    assert "1968 more signatures not read (at most 32 are)" in found.message, found.message

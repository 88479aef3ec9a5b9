"""`modelyard verify -f`, as a model owner's pipeline runs it, against a real registry."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import artifacts
from support.registry import LocalRegistry, require_tools

UNKNOWN = "sha256:" + "0" * 64


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[LocalRegistry]:
    require_tools()
    registry = await LocalRegistry(
        tmp_path / "registry", tls=True, auth=("robot", "pa55word")
    ).start()
    yield registry
    await registry.stop()


def manifests(
    registry: LocalRegistry,
    versions: list[tuple[str, str, str | None]],
    password: str = "pa55word",
    with_secret: bool = True,
) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ca", "namespace": "ml"},
            "data": {"ca.crt": base64.b64encode(registry.ca_pem.encode()).decode()},
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local", "namespace": "ml"},
            "spec": {
                "url": registry.url,
                "tls": {"caSecret": "ca"},
                **({"credentialsSecret": "robot"} if with_secret else {}),
            },
        },
    ]
    if with_secret:
        documents.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/basic-auth",
                "metadata": {"name": "robot", "namespace": "ml"},
                "stringData": {"username": "robot", "password": password},
            }
        )
    for version, digest, tag in versions:
        spec: dict[str, Any] = {
            "model": "awesome-llm",
            "version": version,
            "registry": "local",
            "repository": "acme/awesome-llm",
            "digest": digest,
        }
        if tag:
            spec["tag"] = tag
        documents.append(
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": f"awesome-llm-{version}", "namespace": "ml"},
                "spec": spec,
            }
        )
    return documents


def verify(
    tmp_path: Path, documents: list[dict[str, Any]], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return subprocess.run(
        [sys.executable, "-m", "modelyard", "verify", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


async def test_matching_version_exits_zero(secured: LocalRegistry, tmp_path: Path) -> None:
    digest = secured.push("acme/awesome-llm", "1.1.0", "weights")
    result = verify(tmp_path, manifests(secured, [("1.1.0", digest, "1.1.0")]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok ") and digest in result.stdout


async def test_mismatch_exits_non_zero_with_both_digests(
    secured: LocalRegistry, tmp_path: Path
) -> None:
    published = secured.push("acme/awesome-llm", "1.0.0", "old weights")
    moved = secured.push("acme/awesome-llm", "1.1.0", "new weights")
    result = verify(
        tmp_path, manifests(secured, [("1.1.0", published, "1.1.0"), ("1.0.0", published, "1.0.0")])
    )
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1 and "DigestMismatch" in failing[0]
    assert published in failing[0] and moved in failing[0]
    assert any(line.startswith("ok ") and "1.0.0" in line for line in result.stdout.splitlines())


async def test_missing_digest_and_wrong_password(secured: LocalRegistry, tmp_path: Path) -> None:
    secured.push("acme/awesome-llm", "1.0.0", "weights")
    result = verify(tmp_path, manifests(secured, [("1.0.0", UNKNOWN, None)]))
    assert result.returncode == 1 and "DigestNotFound" in result.stdout
    result = verify(tmp_path, manifests(secured, [("1.0.0", UNKNOWN, None)], password="wrong-pa55"))
    assert result.returncode == 1 and "Unauthorized" in result.stdout
    assert "wrong-pa55" not in result.stdout + result.stderr


async def test_missing_digest_with_a_tag_names_what_the_tag_points_to(
    secured: LocalRegistry, tmp_path: Path
) -> None:
    """The digest was never pushed, but the tag was (re-pushed since): both digests are shown."""
    pushed = secured.push("acme/awesome-llm", "1.2.0", "weights")
    result = verify(tmp_path, manifests(secured, [("1.2.0", UNKNOWN, "1.2.0")]))
    assert result.returncode == 1
    failing = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert "DigestNotFound" in failing
    assert pushed in failing and UNKNOWN in failing and "tag 1.2.0 points to" in failing


async def test_credentials_from_the_environment(secured: LocalRegistry, tmp_path: Path) -> None:
    digest = secured.push("acme/awesome-llm", "1.1.0", "weights")
    documents = manifests(secured, [("1.1.0", digest, "1.1.0")], with_secret=False)
    env = {
        "MODELYARD_REGISTRY_USERNAME": "robot",
        "MODELYARD_REGISTRY_PASSWORD": "pa55word",
        "DOCKER_CONFIG": str(tmp_path / "no-docker"),
    }
    assert verify(tmp_path, documents, env).returncode == 0
    anonymous = verify(tmp_path, documents, {"DOCKER_CONFIG": str(tmp_path / "no-docker")})
    assert anonymous.returncode == 1 and "Unauthorized" in anonymous.stdout


def test_invalid_manifest_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    documents = [
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "bad"},
            "spec": {
                "model": "m",
                "version": "1.0",
                "registry": "r",
                "repository": "a/b",
                "digest": UNKNOWN,
            },
        }
    ]
    result = verify(tmp_path, documents)
    assert result.returncode == 1
    assert "semantic version" in result.stderr and "Traceback" not in result.stderr


async def test_models_lists_tags_with_their_digests(secured: LocalRegistry, tmp_path: Path) -> None:
    """The repositories the files name, each tag with the digest a ModelVersion would pin."""
    first = secured.push("acme/awesome-llm", "1.0.0", "weights 1.0.0")
    second = secured.push("acme/awesome-llm", "1.1.0", "weights 1.1.0")
    documents = manifests(secured, [("1.1.0", second, "1.1.0")])
    documents.append(
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelTemplate",
            "metadata": {"name": "t", "namespace": "ml"},
            "spec": {
                "modelType": "EMBEDDING",
                "image": {"registry": "local", "repository": "acme/absent", "tag": "1"},
                "resources": {"cpus": 1, "memory": "1Gi"},
            },
        }
    )
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = subprocess.run(
        [sys.executable, "-m", "modelyard", "models", "-f", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (listed,) = json.loads(result.stdout)["registries"]
    repositories = {r["repository"]: r for r in listed["repositories"]}
    assert repositories["acme/absent"]["missing"] is True
    assert repositories["acme/awesome-llm"]["tags"] == [
        {"tag": "1.0.0", "digest": first},
        {"tag": "1.1.0", "digest": second},
    ]
    text = subprocess.run(
        [sys.executable, "-m", "modelyard", "models", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert f"1.0.0  {first}" in text.stdout and "acme/absent: no such repository" in text.stdout
    assert "pa55word" not in text.stdout + text.stderr


async def test_weights_a_node_would_not_mount_fail_with_how_to_repackage(
    secured: LocalRegistry, tmp_path: Path
) -> None:
    mountable = secured.push("acme/awesome-llm", "2.0.0", "weights")
    oras_like = artifacts.empty_config_artifact(
        secured, "acme/awesome-llm", {"model.safetensors": b"\x00" * 64}
    )
    documents = manifests(secured, [])
    for version, digest in (("2.0.0", mountable), ("2.0.1", oras_like)):
        documents.append(
            {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "ModelVersion",
                "metadata": {"name": f"awesome-llm-{version}", "namespace": "ml"},
                "spec": {
                    "model": "awesome-llm",
                    "version": version,
                    "registry": "local",
                    "weights": {"repository": "acme/awesome-llm", "digest": digest},
                },
            }
        )
    result = verify(tmp_path, documents)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok ") and mountable in line for line in lines), lines
    (failing,) = [line for line in lines if line.startswith("FAIL")]
    assert "WeightsNotMountable" in failing and oras_like in failing and "umoci" in failing

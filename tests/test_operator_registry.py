"""The operator process with a real OCI registry: Registry status, verified ModelVersions, and
Models that only ever run verified digests."""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.controllers import CONSENT, DEPLOYMENTS, MODELS, apply_documents, condition, events_for
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools

#: Where the manifests below say they live; each test applies them into its own namespace.
NS = "ml-team"
REGISTRIES = "modelyard.dev/v1alpha1/registries"
VERSIONS = "modelyard.dev/v1alpha1/modelversions"
TEMPLATES = "modelyard.dev/v1alpha1/modeltemplates"
SECRETS = "v1/secrets"
REPOSITORY = "acme/awesome-llm"


def registry(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": {"url": url, **spec},
    }


def secret(name: str, kind: str = "Opaque", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "data": {
            k.replace("_", "."): base64.b64encode(v.encode()).decode() for k, v in data.items()
        },
    }


def version(
    name: str, number: str, digest: str, tag: str | None = None, registry_name: str = "local"
) -> dict[str, Any]:
    spec = {
        "model": "awesome-llm",
        "version": number,
        "registry": registry_name,
        "repository": REPOSITORY,
        "digest": digest,
    }
    if tag:
        spec["tag"] = tag
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": spec,
    }


def template(name: str, image: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "modelType": "CHAT_COMPLETION",
        "resources": {"cpus": 1, "memory": "1Gi"},
        "scaling": {"minWorkers": 1, "maxWorkers": 1},
    }
    if image:
        spec["image"] = image
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": spec,
    }


def model(name: str, template_name: str, selector: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": template_name}
    if selector:
        spec["version"] = {"model": "awesome-llm", "version": selector}
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": spec,
    }


def ready_reason(cluster: Cluster, resource: str, name: str) -> str | None:
    return condition(cluster.get(resource, cluster.namespace, name)).get("reason")


def image(cluster: Cluster, name: str) -> str | None:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, name)
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"] if deployment else None


async def test_registry_status_follows_credentials_and_tls(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    require_tools()
    local = await LocalRegistry(
        tmp_path / "secured", tls=True, auth=("robot", "right-pa55")
    ).start()
    try:
        await apply_documents(
            cluster,
            [
                secret("ca", ca_crt=local.ca_pem),
                secret(
                    "robot", "kubernetes.io/basic-auth", username="robot", password="right-pa55"
                ),
                registry("local", local.url, credentialsSecret="robot", tls={"caSecret": "ca"}),
                registry(
                    "no-secret", local.url, credentialsSecret="absent", tls={"caSecret": "ca"}
                ),
                registry("untrusted", local.url, credentialsSecret="robot"),
            ],
        )
        await eventually(
            lambda: ready_reason(cluster, REGISTRIES, "local") == "Reachable",
            20,
            "Reachable",
            operator,
        )
        status = cluster.get(REGISTRIES, cluster.namespace, "local")["status"]
        assert status["pullSecret"] == "local-pull" and status["lastCheckTime"]
        pull = cluster.get(SECRETS, cluster.namespace, "local-pull")
        assert pull is not None and pull["type"] == "kubernetes.io/dockerconfigjson"
        assert pull["metadata"]["ownerReferences"][0]["kind"] == "Registry"
        await eventually(
            lambda: ready_reason(cluster, REGISTRIES, "no-secret") == "SecretNotFound",
            10,
            "SecretNotFound",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, REGISTRIES, "untrusted") == "TLSError",
            10,
            "TLSError",
            operator,
        )

        # An edited Secret is picked up without touching the Registry.
        wrong = base64.b64encode(b"wrong-pa55").decode()
        await cluster.patch(
            SECRETS, cluster.namespace, "robot", {"data": {"password": wrong}}, manager="kubectl"
        )
        await eventually(
            lambda: ready_reason(cluster, REGISTRIES, "local") == "Unauthorized",
            10,
            "Unauthorized",
            operator,
        )
        right = base64.b64encode(b"right-pa55").decode()
        await cluster.patch(
            SECRETS, cluster.namespace, "robot", {"data": {"password": right}}, manager="kubectl"
        )
        await eventually(
            lambda: ready_reason(cluster, REGISTRIES, "local") == "Reachable",
            10,
            "Reachable again",
            operator,
        )
        await eventually(
            lambda: any(
                e["reason"] == "Unauthorized" and e["type"] == "Warning"
                for e in events_for(cluster, "local")
            ),
            5,
            "Unauthorized event",
            operator,
        )
        for leaked in ("right-pa55", "wrong-pa55"):
            assert leaked not in operator.output
            assert all(leaked not in str(e) for e in cluster.list("v1/events"))
            assert all(leaked not in str(r.get("status")) for r in cluster.list(REGISTRIES))
    finally:
        await local.stop()


async def test_models_run_only_verified_digests_and_roll_forward(
    cluster: Cluster, tmp_path: Path
) -> None:
    require_tools()
    local = await LocalRegistry(tmp_path / "plain").start()
    first = local.push(REPOSITORY, "1.0.0", "weights 1.0.0")
    second = local.push(REPOSITORY, "1.1.0", "weights 1.1.0")
    operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        await apply_documents(
            cluster,
            [
                registry("local", local.url),
                template("llm-cpu"),
                version("awesome-llm-1.0.0", "1.0.0", first, "1.0.0"),
                model("chat", "llm-cpu", ">=1.0.0 <2.0.0"),
            ],
        )
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "awesome-llm-1.0.0") == "DigestVerified",
            20,
            "verified",
            operator,
        )
        verified = cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.0.0")["status"]
        assert (
            verified["image"] == f"{local.host}/{REPOSITORY}@{first}" and verified["verifiedTime"]
        )
        await eventually(
            lambda: image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{first}",
            20,
            "runs 1.0.0",
            operator,
        )

        # A version whose digest does not match never reaches a Deployment.
        await apply_documents(cluster, [version("awesome-llm-1.2.0", "1.2.0", first, "1.1.0")])
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "awesome-llm-1.2.0") == "DigestMismatch",
            20,
            "mismatch",
            operator,
        )
        message = condition(cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.2.0"))[
            "message"
        ]
        assert first in message and second in message
        assert (cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.2.0")["status"] or {}).get(
            "image"
        ) is None

        # A newer verified version in range: the Model rolls to it.
        await apply_documents(cluster, [version("awesome-llm-1.1.0", "1.1.0", second, "1.1.0")])
        await eventually(
            lambda: image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}",
            20,
            "runs 1.1.0",
            operator,
        )
        await eventually(
            lambda: (
                (cluster.get(MODELS, cluster.namespace, "chat")["status"] or {}).get(
                    "resolvedVersion"
                )
                == "1.1.0"
            ),
            10,
            "resolvedVersion",
            operator,
        )

        # One (model, version) pair per namespace.
        await apply_documents(cluster, [version("awesome-llm-1.1.0-again", "1.1.0", second)])
        await eventually(
            lambda: (
                ready_reason(cluster, VERSIONS, "awesome-llm-1.1.0-again") == "DuplicateVersion"
            ),
            10,
            "duplicate",
            operator,
        )
        assert (
            "awesome-llm-1.1.0"
            in condition(cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0-again"))[
                "message"
            ]
        )

        # Someone pushes over the tag: reported at the next check (here: a restart), never followed.
        moved = local.push(REPOSITORY, "1.1.0", "weights pushed over the tag")
        await operator.kill()
        operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
        await eventually(
            lambda: (
                condition(
                    cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0"), "TagCurrent"
                ).get("reason")
                == "TagMoved"
            ),
            20,
            "tag moved",
            operator,
        )
        after = cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0")
        assert condition(after)["status"] == "True", "the published digest still exists"
        assert after["status"]["tagDigest"] == moved
        assert (
            moved in condition(after, "TagCurrent")["message"]
            and second in condition(after, "TagCurrent")["message"]
        )
        await eventually(
            lambda: any(
                e["reason"] == "TagMoved" and e["type"] == "Warning"
                for e in events_for(cluster, "awesome-llm-1.1.0")
            ),
            5,
            "TagMoved event",
            operator,
        )
        assert image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}"

        # The published digest is deleted: the version stops verifying, the Model keeps what runs
        # and says why it rolls to nothing else (no silent downgrade to 1.0.0).
        request = urllib.request.Request(
            f"{local.url}/v2/{REPOSITORY}/manifests/{second}", method="DELETE"
        )
        urllib.request.urlopen(request, timeout=5)
        await operator.kill()
        operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "awesome-llm-1.1.0") == "DigestNotFound",
            20,
            "stopped verifying",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, MODELS, "chat") == "VersionNotReady",
            20,
            "model blocked",
            operator,
        )
        assert (
            "no longer verifies"
            in condition(cluster.get(MODELS, cluster.namespace, "chat"))["message"]
        )
        assert image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}"
    finally:
        await operator.stop()
        await local.stop()


async def test_template_image_by_tag_is_pinned_to_its_digest(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    require_tools()
    local = await LocalRegistry(tmp_path / "plain").start()
    try:
        digest = local.push(REPOSITORY, "stable", "weights")
        await apply_documents(
            cluster,
            [
                registry("local", local.url),
                template(
                    "tagged", {"registry": "local", "repository": REPOSITORY, "tag": "stable"}
                ),
                model("pinned", "tagged"),
            ],
        )
        await eventually(
            lambda: image(cluster, "pinned") == f"{local.host}/{REPOSITORY}@{digest}",
            20,
            "pinned",
            operator,
        )
        assert (
            cluster.get(TEMPLATES, cluster.namespace, "tagged")["status"]["resolvedDigest"]
            == digest
        )
        await apply_documents(
            cluster,
            [
                template(
                    "missing-tag", {"registry": "local", "repository": REPOSITORY, "tag": "nope"}
                ),
                model("waiting", "missing-tag"),
            ],
        )
        await eventually(
            lambda: ready_reason(cluster, TEMPLATES, "missing-tag") == "TagNotFound",
            20,
            "tag not found",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, MODELS, "waiting") == "ImageUnresolved",
            20,
            "waiting",
            operator,
        )
        assert cluster.get(MODELS, cluster.namespace, "waiting")["status"]["state"] == "PENDING"
        assert cluster.get(DEPLOYMENTS, cluster.namespace, "waiting") is None

        # The pinned template's tag is edited to one that does not exist: the old tag's digest
        # is no longer pinned (the template says why), so nothing new runs it; the Model keeps
        # the workers it has, on the old digest, and waits.
        running = cluster.get(DEPLOYMENTS, cluster.namespace, "pinned")
        await apply_documents(
            cluster,
            [template("tagged", {"registry": "local", "repository": REPOSITORY, "tag": "nope"})],
        )
        await eventually(
            lambda: ready_reason(cluster, TEMPLATES, "tagged") == "TagNotFound",
            20,
            "the new tag looked up",
            operator,
        )
        edited = cluster.get(TEMPLATES, cluster.namespace, "tagged")
        assert "resolvedDigest" not in edited["status"], edited["status"]
        await eventually(
            lambda: ready_reason(cluster, MODELS, "pinned") == "ImageUnresolved",
            20,
            "the Model waits for the new digest",
            operator,
        )
        kept = cluster.get(DEPLOYMENTS, cluster.namespace, "pinned")
        assert kept["spec"]["template"] == running["spec"]["template"]
    finally:
        await local.stop()

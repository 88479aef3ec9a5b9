"""Weights as verified artifacts: a ModelVersion of files in an OCI registry, mounted into its
template's runtime by an image volume, and refused before any pod when a node would not mount
it as its files.

The shapes refused are the ones seen going wrong on a real containerd 2 node (an empty-config
artifact never mounts, a blob-per-file artifact mounts an empty directory without an error);
here they are pushed to a real registry the way oras and ModelPack tools push them, and judged
by the operator process against the real API server.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelyard import weights as weights_step
from modelyard.api.v1alpha1 import ModelState, RegistryStatus, parse
from modelyard.builders import workload as wl
from modelyard.builders.plan import plan_model
from modelyard.handlers.trim import trim_pod
from modelyard.registry.weights import shape_problem
from modelyard.status import reasons
from modelyard.status.model import observe
from support import artifacts, cosign, images, operator_image, runtime_image
from support.cluster import VERSIONS, Cluster, RealNode
from support.controllers import (
    CONSENT,
    DEPLOYMENTS,
    MODELS,
    PODS,
    TEMPLATES,
    apply_documents,
    condition,
)
from support.examples import example
from support.mlflow_server import MlflowServer
from support.node import NODE_IP
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools
from support.workloads import NODE_OPERATOR_CONFIG, registry_documents
from test_builders import CONFIG, registries, typed
from test_node import history, pods_of
from test_runtimes import ROWS, log_iris, mlflow_registry, runtime_template

DIGEST = "sha256:" + "5" * 64


def ready(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "DigestVerified",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        **(status or {}),
    }


def verified_weights_version() -> Any:
    """The example's weights version as the operator leaves it once verified and mountable."""
    return typed(
        "ModelVersion",
        "iris-weights-1-0-0",
        status=ready({"weights": f"quay.io/acme/iris-weights@{DIGEST}"}),
    )


# -- what the pods get ----------------------------------------------------------------------


def test_weights_are_mounted_read_only_at_the_templates_path_by_digest() -> None:
    result = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights"),
        {**registries(), "ghcr": typed("Registry", "ghcr")},
        [verified_weights_version()],
        CONFIG,
        allow_tag=True,
    )
    assert result.children is not None, result.checks
    pod = result.children.deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {
            "name": wl.WEIGHTS_VOLUME,
            "image": {
                "reference": f"quay.io/acme/iris-weights@{DIGEST}",
                "pullPolicy": "IfNotPresent",
            },
        }
    ]
    (container,) = pod["containers"]
    assert container["volumeMounts"] == [
        {"name": wl.WEIGHTS_VOLUME, "mountPath": "/models", "readOnly": True}
    ]
    # The runtime comes from the template; the weights' Registry's pull Secret comes along.
    assert container["image"] == "ghcr.io/mlflow/mlflow:v3.17.2"
    assert pod["imagePullSecrets"] == [{"name": "quay-robot"}]
    assert result.resolved_version == "1.0.0"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"spec__weights": None}, reasons.WEIGHTS_PATH_REQUIRED),
        ({"spec__image": None}, reasons.IMAGE_REQUIRED),
    ],
)
def test_a_template_that_cannot_take_weights_says_why(change: dict[str, Any], reason: str) -> None:
    result = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights", **change),
        {**registries(), "ghcr": typed("Registry", "ghcr")},
        [verified_weights_version()],
        CONFIG,
        allow_tag=True,
    )
    assert result.children is None
    assert result.checks[reasons.VERSION_RESOLVED].reason == reason


PINNED = {
    "artifacts": "/1/models/m-1/artifacts",
    "digest": "sha256:" + "e" * 64,
    "sizeBytes": 5 * 2**20,
    "sha256": {"MLmodel": "a" * 64, "model.skops": "b" * 64},
}


VERIFIER_IMAGE = "verifier@sha256:" + "7" * 64


def mlflow_version_of(
    version: str, number: str, files: dict[str, Any] | None, problem: str | None = None
) -> Any:
    """A Ready ModelVersion of `iris` from the examples' MLflow registry, its files pinned
    (`files`) or not (`problem`)."""
    mlflow: dict[str, Any] = {"version": number, "modelUri": f"models:/iris/{number}"}
    if files:
        mlflow["files"] = files
    if problem:
        mlflow["filesProblem"] = problem
    return parse(
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": f"iris-files-{version.replace('.', '-')}", "namespace": "ml-team"},
            "spec": {
                "model": "iris-weights",
                "version": version,
                "registry": "mlflow",
                "mlflow": {"name": "iris", "version": number},
            },
            "status": ready({"mlflow": mlflow}),
        }
    )


def mlflow_files_plan(files: dict[str, Any] | None, **config: Any) -> Any:
    """The weights template running version 3 of `iris` from the examples' MLflow registry,
    its files pinned (`files`) or not."""
    version = mlflow_version_of("1.0.0", "3", files)
    return plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights"),
        {**registries(), "ghcr": typed("Registry", "ghcr"), "mlflow": typed("Registry", "mlflow")},
        [version],
        CONFIG.model_copy(
            update={"weights_verifier_image": "verifier@sha256:" + "7" * 64, **config}
        ),
        allow_tag=True,
    )


def test_an_mlflow_versions_pinned_files_are_fetched_into_the_weights_path_and_checked() -> None:
    """The same weights template runs a version from MLflow: its runtime reads /models, where
    an init step put the files pinned at verification, each checked; MLflow's own URI and the
    Registry's credentials (as references) go to the init step, never the runtime's MODEL_URI."""
    result = mlflow_files_plan(PINNED)
    assert result.children is not None, result.checks
    pod = result.children.deployment["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": wl.WEIGHTS_VOLUME, "emptyDir": {"sizeLimit": "69Mi"}}]
    (step,) = pod["initContainers"]
    assert step["name"] == weights_step.VERIFIER_CONTAINER
    assert step["args"] == ["fetch-mlflow-weights", "/models"]
    env = {e["name"]: e for e in step["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "https://mlflow.ml-team.example.com"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-reader"
    assert json.loads(env[weights_step.PINNED_VARIABLE]["value"]) == PINNED["sha256"]
    assert env[weights_step.PINNED_BYTES_VARIABLE]["value"] == str(PINNED["sizeBytes"])
    assert env[weights_step.ARTIFACTS_VARIABLE]["value"] == PINNED["artifacts"]
    assert "MODEL_URI" not in env
    (runtime,) = pod["containers"]
    assert {"name": "MODEL_URI", "value": "/models"} in runtime["env"]
    # The runtime reads files: it gets nothing to reach MLflow with, the credentials least.
    assert not [e for e in runtime["env"] if e["name"].startswith("MLFLOW_")], runtime["env"]
    assert runtime["volumeMounts"] == [
        {"name": wl.WEIGHTS_VOLUME, "mountPath": "/models", "readOnly": True}
    ]


def test_a_version_not_pinned_yet_is_passed_over_by_a_template_that_loads_files() -> None:
    """A new MLflow version is Ready before its files are pinned (the pin follows): a Model
    whose template loads files stays on the version it runs, and says why it did not roll."""
    versions = [
        mlflow_version_of("1.0.0", "3", PINNED),
        mlflow_version_of("1.1.0", "4", None, problem="the tracking server lists no files for it"),
    ]
    result = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights"),
        {**registries(), "ghcr": typed("Registry", "ghcr"), "mlflow": typed("Registry", "mlflow")},
        versions,
        CONFIG.model_copy(update={"weights_verifier_image": VERIFIER_IMAGE}),
        allow_tag=True,
    )
    assert result.children is not None, result.checks
    assert result.resolved_version == "1.0.0"
    said = result.checks["VersionResolved"].message
    assert "1.1.0 (WeightsNotPinned: the tracking server lists no files for it)" in said, said


@pytest.mark.parametrize(
    ("files", "config", "reason"),
    [
        (None, {}, reasons.VERSION_NOT_READY),
        (PINNED, {"weights_verifier_image": None}, reasons.WEIGHTS_VERIFIER_MISSING),
    ],
)
def test_an_mlflow_version_a_weights_template_cannot_check_makes_no_workers(
    files: dict[str, Any] | None, config: dict[str, Any], reason: str
) -> None:
    result = mlflow_files_plan(files, **config)
    assert result.children is None
    assert result.checks["VersionResolved"].reason == reason, result.checks


def test_a_version_has_exactly_one_source() -> None:
    document = example("ModelVersion", "iris-weights-1-0-0")
    document["spec"]["digest"] = DIGEST
    document["spec"]["repository"] = "acme/iris"
    with pytest.raises(ValueError, match="exactly one of"):
        parse(document)


# -- which shapes a node mounts ---------------------------------------------------------------

LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST, "size": 1}
CONFIG_DESCRIPTOR = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST}
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IMAGE_CONFIG = {"rootfs": {"type": "layers", "diff_ids": [DIGEST]}}


def manifest(**fields: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": artifacts.OCI_MANIFEST,
        "config": CONFIG_DESCRIPTOR,
        "layers": [LAYER],
        **fields,
    }


@pytest.mark.parametrize(
    ("shape", "config", "said"),
    [
        (manifest(), IMAGE_CONFIG, None),
        (
            manifest(
                mediaType="application/vnd.docker.distribution.manifest.v2+json",
                config={"mediaType": "application/vnd.docker.container.image.v1+json"},
                layers=[
                    {**LAYER, "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}
                ],
            ),
            IMAGE_CONFIG,
            None,
        ),
        (manifest(mediaType=artifacts.OCI_INDEX, manifests=[]), None, "image index"),
        (
            manifest(config={"mediaType": artifacts.EMPTY_CONFIG}),
            None,
            "OCI's empty config: a node never mounts it",
        ),
        (
            manifest(config={"mediaType": "application/vnd.cncf.model.config.v1+json"}),
            None,
            "not an image config",
        ),
        (
            manifest(layers=[{**LAYER, "mediaType": "application/vnd.cncf.model.weight.v1.raw"}]),
            IMAGE_CONFIG,
            "mounts an empty directory",
        ),
        (manifest(layers=[LAYER, LAYER]), IMAGE_CONFIG, "1 layer diff IDs for 2 layers"),
        (manifest(layers=[]), {"rootfs": {"type": "layers", "diff_ids": []}}, "no layers"),
    ],
)
def test_only_images_of_tar_layers_are_mountable(
    shape: dict[str, Any], config: dict[str, Any] | None, said: str | None
) -> None:
    problem = shape_problem(shape, config)
    if said is None:
        assert problem is None
    else:
        assert problem is not None and said in problem, problem


# -- judged against a real registry, by the operator ------------------------------------------


def weights_documents(registry_url: str, digests: dict[str, str]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "quay", "labels": CONSENT},
            "spec": {"url": registry_url},
        }
    ]
    for index, (shape, digest) in enumerate(sorted(digests.items())):
        version = example("ModelVersion", "iris-weights-1-0-0")
        version["metadata"]["name"] = f"iris-{shape}"
        version["spec"]["model"] = f"iris-{shape}"
        version["spec"]["version"] = f"1.0.{index}"
        version["spec"]["weights"] = {"repository": f"acme/{shape}", "digest": digest}
        documents.append(version)
    return documents


async def test_only_weights_a_node_mounts_as_their_files_are_ready(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    require_tools()
    local = await LocalRegistry(tmp_path / "registry").start()
    try:
        files = {"MLmodel": b"flavors: {}\n", "model.skops": b"\x00" * 4096}
        source = tmp_path / "files"
        source.mkdir()
        for name, data in files.items():
            (source / name).write_bytes(data)
        image = artifacts.image_of_files(local, "acme/image", "1.0.0", source, tmp_path)
        digests = {
            "image": image,
            "empty-config": artifacts.empty_config_artifact(local, "acme/empty-config", files),
            "blob-per-file": artifacts.blob_per_file_artifact(local, "acme/blob-per-file", files),
            "index": artifacts.push_manifest(
                local,
                "acme/index",
                "1.0.0",
                {
                    "schemaVersion": 2,
                    "mediaType": artifacts.OCI_INDEX,
                    "manifests": [],
                },
            ),
        }
        template = example("ModelTemplate", "mlflow-weights")
        template["spec"]["image"] = {
            "registry": "quay",
            "repository": "acme/runtime",
            "digest": "sha256:" + "7" * 64,
        }
        template["metadata"]["labels"] = CONSENT
        model = example("Model", "iris-from-weights")
        model["spec"]["version"] = {"model": "iris-empty-config", "version": "1.x"}
        await apply_documents(cluster, [*weights_documents(local.url, digests), template, model])

        def reason(name: str) -> str | None:
            return condition(cluster.get(VERSIONS, cluster.namespace, name)).get("reason")

        await eventually(
            lambda: reason("iris-image") == "DigestVerified", 20, "the image verified", operator
        )
        status = cluster.get(VERSIONS, cluster.namespace, "iris-image")["status"]
        assert status["weights"] == f"{local.host}/acme/image@{image}"
        assert condition({"status": status}, reasons.MOUNTABLE)["status"] == "True"
        for refused in ("empty-config", "blob-per-file", "index"):
            await eventually(
                lambda refused=refused: reason(f"iris-{refused}") == "WeightsNotMountable",
                20,
                f"{refused} refused",
                operator,
            )
            refused_status = cluster.get(VERSIONS, cluster.namespace, f"iris-{refused}")["status"]
            assert not refused_status.get("weights")
            message = condition({"status": refused_status})["message"]
            assert digests[refused] in message
            if refused != "index":
                assert "umoci" in message, message  # how to repackage
        # A Model asking for refused weights gets no pod at all, and says why.
        await eventually(
            lambda: (
                condition(cluster.get(MODELS, cluster.namespace, "iris-from-weights"), "Ready").get(
                    "reason"
                )
                == reasons.VERSION_NOT_READY
            ),
            20,
            "the Model waits for a mountable version",
            operator,
        )
        assert "WeightsNotMountable" in json.dumps(
            cluster.get(MODELS, cluster.namespace, "iris-from-weights")["status"]
        )
        assert cluster.get(DEPLOYMENTS, cluster.namespace, "iris-from-weights") is None
    finally:
        await local.stop()


# -- on the real node, served by a real runtime -----------------------------------------------

WEIGHTS_REPOSITORY = "acme/iris-weights"


def save_iris(directory: Path, rows: int | None = None) -> Path:
    """An sklearn iris classifier trained now (on the first `rows`, or all) and saved as an
    MLflow model directory (MLmodel, the model file, its environment): the files a version of
    weights holds."""
    import mlflow  # noqa: PLC0415 -- slow to import; only this test needs it
    from sklearn.datasets import load_iris  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    features, labels = load_iris(return_X_y=True, as_frame=True)
    features.columns = list(runtime_image.FEATURES)
    if rows is not None:
        features, labels = (
            features.sample(rows, random_state=1),
            labels.sample(rows, random_state=1),
        )
    classifier = LogisticRegression(max_iter=1000).fit(features, labels)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "iris-model"
    mlflow.sklearn.save_model(classifier, str(target), input_example=features.head(2))
    return target


def node_weights_version(
    name: str, model_name: str, digest: str, version: str = "1.0.0"
) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "model": model_name,
            "version": version,
            "registry": "local",
            "weights": {"repository": WEIGHTS_REPOSITORY, "digest": digest},
        },
    }


def weights_model(name: str, model_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Model",
        "metadata": {"name": name},
        "spec": {
            "template": "mlflow-weights",
            "version": {"model": model_name, "version": "1.x"},
        },
    }


def mlflow_weights_template(runtimes: str) -> dict[str, Any]:
    probe = {
        "protocol": "MLflow",
        "request": {"dataframe_split": {"columns": list(runtime_image.FEATURES), "data": ROWS}},
    }
    template = runtime_template(
        "mlflow-weights", runtime_image.mlflow("/models", ""), runtimes, probe
    )
    template["spec"]["env"] = {}
    template["spec"]["weights"] = {"mountPath": "/models"}
    return template


def layer_digests(node: RealNode, digest: str) -> list[str]:
    """The layer digests of the weights image as the registry holds them."""
    found = json.loads(
        images.run(
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"--creds={':'.join(node.credentials)}",
            f"docker://{node.registry.host}/{WEIGHTS_REPOSITORY}@{digest}",
        )
    )
    return [str(layer["digest"]) for layer in found["layers"]]


def model_status(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get(MODELS, cluster.namespace, name) or {}).get("status") or {})


@dataclass(frozen=True)
class Published:
    """Three versions of one model's weights in the node's registry (digests), and the public
    keys (PEM) of the cosign key that signed the images and of the key that signed the files."""

    signed: str
    tampered: str
    unsigned: str
    #: The next version's weights: the same model retrained on other rows, signed as well.
    following: str
    changed_file: str
    image_key: str
    files_key: str


def publish_weights(node: RealNode, directory: Path, runtime: str) -> Published:
    """An iris model saved by MLflow, its files signed with model-signing, pushed as an image
    that cosign signs; the same files with one byte changed after signing (model.sig as it
    was), pushed and even cosign-signed by a careless pipeline — only the files' own signature
    can tell; and those re-pushed under a new digest the policy does not cover. The platform
    team's `runtime` image (a digest) is signed too: the policy covers every image."""
    files = save_iris(directory)
    files_key, files_public = signing_key(directory)
    sign_files(files, files_key)
    signer = cosign.Cosign(cosign.binary(), directory / "cosign")
    release = signer.generate_key_pair("release")

    def push(tag: str, source: Path, *, cosign_signed: bool) -> str:
        work = directory / f"push-{tag}"
        work.mkdir()
        digest = artifacts.image_of_files(node.registry, WEIGHTS_REPOSITORY, tag, source, work)
        if cosign_signed:
            reference = f"{node.registry.host}/{WEIGHTS_REPOSITORY}@{digest}"
            signer.sign(release, reference, bundle=True, credentials=node.credentials)
        return digest

    runtime_reference = f"{node.registry.host}/{runtime_image.REPOSITORY}@{runtime}"
    signer.sign(release, runtime_reference, bundle=True, credentials=node.credentials)
    signed = push("1.0.0", files, cosign_signed=True)
    following_files = save_iris(directory / "following", rows=120)
    sign_files(following_files, files_key)
    following = push("1.1.0", following_files, cosign_signed=True)
    tampered_files = directory / "tampered"
    shutil.copytree(files, tampered_files)
    changed = next(p for p in tampered_files.iterdir() if p.suffix == ".skops")
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0x01
    changed.write_bytes(bytes(data))
    return Published(
        signed=signed,
        tampered=push("1.0.0-tampered", tampered_files, cosign_signed=True),
        unsigned=push("1.0.0-repushed", tampered_files, cosign_signed=False),
        following=following,
        changed_file=changed.name,
        image_key=release.public_pem,
        files_key=files_public,
    )


@pytest.fixture
async def verifying_operator(
    real_node: RealNode, cluster: Cluster, tmp_path: Path
) -> AsyncIterator[OperatorProcess]:
    """`modelyard run` as on the node (`node_operator`), with the operator's own image, pushed
    to the node's registry, as the workers' weights verifier, as the chart configures it."""
    layout, tag, _ = await asyncio.to_thread(operator_image.build)
    reference = await asyncio.to_thread(
        operator_image.push, layout, tag, real_node.registry.host, real_node.credentials
    )
    process = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path),
        tmp_path,
        config={**NODE_OPERATOR_CONFIG, "weightsVerifierImage": f"{reference}:{tag}"},
    ).start()
    yield process
    await process.stop()


@pytest.mark.timeout(900)
async def test_signed_weights_are_verified_twice_served_by_a_real_runtime_pulled_once(
    cluster: Cluster,
    real_node: RealNode,
    verifying_operator: OperatorProcess,
    runtimes: str,
    tmp_path: Path,
) -> None:
    """An iris model saved by MLflow, its files signed with model-signing and the image of them
    signed with cosign, under an Enforce policy: the operator verifies the digest's signature,
    the worker's init step the mounted files against model.sig, and MLflow's scoring server
    serves them from /models — READY with one prediction per row. A second worker is warmed for
    (the weights removed from the node first: a warming pod pulls them back before the worker
    starts), and a worker started again takes them from the node's content store. Weights whose
    files changed after they were signed never reach the runtime; weights re-pushed with a byte
    changed, under a digest nobody signed, never reach a pod."""
    operator = verifying_operator
    published = publish_weights(real_node, tmp_path, runtimes)
    signed, tampered, unsigned = published.signed, published.tampered, published.unsigned
    secret, registry = registry_documents(real_node)
    registry["spec"]["signatures"] = {
        "mode": "Enforce",
        "publicKeys": [{"secretName": "release-key"}, {"secretName": "weights-key"}],
    }
    keys = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": CONSENT},
            "stringData": {"cosign.pub": pem},
        }
        for name, pem in (
            ("release-key", published.image_key),
            ("weights-key", published.files_key),
        )
    ]
    await apply_documents(
        cluster,
        [
            *keys,
            secret,
            registry,
            mlflow_weights_template(runtimes),
            node_weights_version("iris-1-0-0", "iris", signed),
            node_weights_version("tampered-1-0-0", "tampered", tampered),
            node_weights_version("unsigned-1-0-0", "unsigned", unsigned),
            weights_model("iris", "iris"),
            weights_model("tampered", "tampered"),
            weights_model("unsigned", "unsigned"),
        ],
    )

    # Unsigned under Enforce: refused by the operator; no pod ever refers to it.
    await eventually(
        lambda: (
            condition(cluster.get(VERSIONS, cluster.namespace, "unsigned-1-0-0")).get("reason")
            == "SignatureMissing"
        ),
        60,
        "the re-pushed weights refused",
        operator,
    )
    # Signed as an image, but not the files: the init step refuses, the runtime never starts.
    await eventually(
        lambda: (
            model_status(cluster, "tampered").get("state") == "FAILED"
            and condition(cluster.get(MODELS, cluster.namespace, "tampered")).get("reason")
            == reasons.WEIGHTS_NOT_VERIFIED
        ),
        240,
        lambda: f"tampered FAILED (WeightsNotVerified), after {history(cluster)}",
        operator,
    )
    said = condition(cluster.get(MODELS, cluster.namespace, "tampered"))["message"]
    assert f"changed since signed: {published.changed_file}" in said, said
    (refused_pod,) = pods_of(cluster, "tampered")
    assert all(
        "running" not in (status.get("state") or {}) and not status.get("lastState")
        for status in refused_pod["status"].get("containerStatuses") or []
    ), "the runtime started on files that do not verify"

    # Signed twice: verified in the pod, mounted, served.
    await eventually(
        lambda: model_status(cluster, "iris").get("state") == "READY",
        300,
        lambda: f"iris READY, after {history(cluster)}",
        operator,
    )
    found = cluster.get(MODELS, cluster.namespace, "iris")
    assert condition(found, "Conformant")["status"] == "True", found["status"]
    (pod,) = pods_of(cluster, "iris")
    (step,) = pod["status"]["initContainerStatuses"]
    assert step["state"]["terminated"]["exitCode"] == 0
    spec = cluster.get(DEPLOYMENTS, cluster.namespace, "iris")["spec"]["template"]["spec"]
    assert spec["volumes"][0]["image"]["reference"] == (
        f"{real_node.registry.host}/{WEIGHTS_REPOSITORY}@{signed}"
    )
    assert cluster.get(DEPLOYMENTS, cluster.namespace, "unsigned") is None

    layers = layer_digests(real_node, signed)
    pulled = {layer: len(real_node.registry.fetches(layer)) for layer in layers}
    assert all(count == 1 for count in pulled.values()), pulled

    # A second worker on the same node, then the first one gone and started again: both
    # mount the weights the node already holds. The second is warmed for first.
    await scale_up_is_warmed_first(
        cluster, real_node, operator, signed, first_worker=pod["metadata"]["name"]
    )
    pulled = {layer: len(real_node.registry.fetches(layer)) for layer in layers}
    first = pod["metadata"]["name"]
    await cluster.remove(PODS, cluster.namespace, first)
    await eventually(
        lambda: (
            first not in {p["metadata"]["name"] for p in pods_of(cluster, "iris")}
            and model_status(cluster, "iris").get("readyReplicas") == 2
        ),
        240,
        lambda: f"a replacement worker ready, after {history(cluster)}",
        operator,
    )
    again = {layer: len(real_node.registry.fetches(layer)) for layer in layers}
    assert again == pulled, f"the weights were fetched again: {again} (before: {pulled})"

    await canary_of_new_weights_starts_on_them_warm(
        cluster, real_node, operator, published.following, layers
    )


async def scale_up_is_warmed_first(
    cluster: Cluster, node: RealNode, operator: OperatorProcess, serving: str, *, first_worker: str
) -> None:
    """minWorkers 1 → 2, the weights first removed from the node's content store (the running
    worker keeps its mount): the Deployment stays at one worker while a pod the scheduler
    places as it would place the second worker pulls the weights back onto that node; it grows
    once that pod ended, and the kubelet's word on the new worker's weights is "already
    present on machine". The node then reports the weights among its images, which the
    scheduler's ImageLocality score reads for image volumes: new workers are drawn to nodes
    holding them. The Model stays READY on its one worker while it waits."""
    seen: list[tuple[int, tuple[str, ...]]] = []
    held: set[str] = set()

    async def observe_scale_up() -> None:
        while True:
            deployment = cluster.get(DEPLOYMENTS, cluster.namespace, "iris") or {}
            warm = cluster.list(PODS, cluster.namespace, "modelyard.dev/warms-for=scale-up")
            phases = tuple(str((p.get("status") or {}).get("phase")) for p in warm)
            replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
            seen.append((replicas, phases))
            if replicas == 1 and phases:
                held.add(str(model_status(cluster, "iris").get("state")))
            await asyncio.sleep(0.2)

    reference = f"{node.registry.host}/{WEIGHTS_REPOSITORY}@{serving}"
    node.node.ctr("images", "rm", "--sync", reference)
    assert reference not in node.node.ctr("images", "ls", "-q").split()
    manifest = f"/manifests/{serving}"
    fetched_before = len(node.registry.fetches(manifest))
    observer = asyncio.create_task(observe_scale_up())
    try:
        await cluster.patch(
            TEMPLATES,
            cluster.namespace,
            "mlflow-weights",
            {"spec": {"scaling": {"minWorkers": 2, "maxWorkers": 2}}},
            manager="kubectl",
        )
        await eventually(
            lambda: model_status(cluster, "iris").get("readyReplicas") == 2,
            240,
            lambda: f"two workers ready, after {history(cluster)}",
            operator,
        )
    finally:
        observer.cancel()
    assert any(replicas == 1 and phases for replicas, phases in seen), (
        f"no warming pod seen before the second worker: {seen}"
    )
    grown = [phase for replicas, phases in seen if replicas >= 2 for phase in phases]
    assert all(phase == "Succeeded" for phase in grown), f"grown while warming: {seen}"
    assert held == {"READY"}, f"the Model was not READY while warming: {held}"
    events = cluster.list("v1/events", cluster.namespace)
    said = [
        str(event.get("message"))
        for event in events
        if event.get("reason") == "Warming"
        and (event.get("involvedObject") or {}).get("name") == "iris"
    ]
    assert any("scaling up from 1 to 2" in message for message in said), said
    scheduled = [
        str(event.get("message"))
        for event in events
        if event.get("reason") == "Scheduled"
        and str((event.get("involvedObject") or {}).get("name")).startswith("iris-warm-")
    ]
    assert scheduled and all(node.name in message for message in scheduled), scheduled
    assert len(node.registry.fetches(manifest)) > fetched_before, "the weights never pulled"
    pulled = [
        (str((event.get("involvedObject") or {}).get("name")), str(event.get("message")))
        for event in events
        if event.get("reason") in ("Pulled", "Pulling") and reference in str(event.get("message"))
    ]
    warm = [message for name, message in pulled if name.startswith("iris-warm-")]
    assert warm and not any("already present" in message for message in warm), pulled
    second = [
        message
        for name, message in pulled
        if not name.startswith(("iris-warm-", "iris-canary-")) and name != first_worker
    ]
    assert second and all("already present on machine" in m for m in second), pulled
    await eventually(
        lambda: any(
            reference in (image.get("names") or [])
            for image in (cluster.get("v1/nodes", None, node.name) or {})
            .get("status", {})
            .get("images", [])
        ),
        60,
        "the node reports the weights among its images",
        operator,
    )
    await eventually(
        lambda: (
            not [
                p
                for p in cluster.list(PODS, cluster.namespace, "modelyard.dev/warms-for=scale-up")
                if not p["metadata"].get("deletionTimestamp")
            ]
        ),
        60,
        "the scale-up's warming pod gone once the Deployment grew",
        operator,
    )


async def canary_of_new_weights_starts_on_them_warm(
    cluster: Cluster,
    node: RealNode,
    operator: OperatorProcess,
    following: str,
    serving_layers: list[str],
) -> None:
    """A new version of the weights in the Model's range, under a canary rollout: the Model
    says Warming while a short pod pulls them onto the serving worker's node; the canary's pod
    starts after, and the kubelet's own word for its weights is "already present on machine".
    The registry served them once; the warming pod is gone once the canary starts."""
    await cluster.patch(
        TEMPLATES,
        cluster.namespace,
        "mlflow-weights",
        {
            "spec": {
                "scaling": {"minWorkers": 1, "maxWorkers": 1},
                "rollout": {"strategy": "Canary", "canaryWorkers": 1, "analysisSeconds": 5},
            }
        },
        manager="kubectl",
    )
    await eventually(
        lambda: (
            model_status(cluster, "iris").get("readyReplicas") == 1
            and len(pods_of(cluster, "iris")) == 1
        ),
        240,
        lambda: f"one worker, after {history(cluster)}",
        operator,
    )
    await apply_documents(
        cluster, [node_weights_version("iris-1-1-0", "iris", following, version="1.1.0")]
    )
    reference = f"{node.registry.host}/{WEIGHTS_REPOSITORY}@{following}"
    layers = [layer for layer in layer_digests(node, following) if layer not in serving_layers]
    await eventually(
        lambda: (
            (model_status(cluster, "iris").get("rollout") or {}).get("phase")
            in ("Promoted", "RolledBack")
        ),
        300,
        lambda: f"1.1.0's rollout ended, after {history(cluster)}",
        operator,
    )
    status = model_status(cluster, "iris")
    assert status["rollout"]["phase"] == "Promoted", status["rollout"]
    assert status["rollout"]["warmedOn"] == [node.name], status["rollout"]
    said = {
        (event.get("reason"), str((event.get("involvedObject") or {}).get("name")))
        for event in cluster.list("v1/events", cluster.namespace)
    }
    assert ("Warming", "iris") in said, said
    # The kubelet on the canary's pod: its weights were on the node before it started.
    pulled = [
        str(event.get("message"))
        for event in cluster.list("v1/events", cluster.namespace)
        if event.get("reason") == "Pulled"
        and str((event.get("involvedObject") or {}).get("name")).startswith("iris-canary-")
        and reference in str(event.get("message"))
    ]
    assert pulled and all("already present on machine" in m for m in pulled), pulled
    fetched = {layer: len(node.registry.fetches(layer)) for layer in layers}
    assert layers and all(count == 1 for count in fetched.values()), fetched
    warming_pods = cluster.list(PODS, cluster.namespace, "modelyard.dev/warms=iris")
    assert all(p["metadata"].get("deletionTimestamp") for p in warming_pods), warming_pods


@pytest.mark.timeout(600)
async def test_an_mlflow_versions_files_are_pinned_fetched_checked_and_served(
    cluster: Cluster,
    real_node: RealNode,
    verifying_operator: OperatorProcess,
    runtimes: str,
    tmp_path: Path,
) -> None:
    """An iris model logged in a real MLflow server (basic auth, artifacts proxied), a
    ModelVersion of it, and the same runtime template as for weights images: the operator
    pins the version's files by content; the worker's init step fetches them into /models and
    checks each; MLflow's scoring server serves them — READY with one prediction per row. A
    file changed in MLflow's artifact store afterwards (an overwritten run) is refused by name
    by the next worker, whose runtime never starts."""
    operator = verifying_operator
    server = await MlflowServer(tmp_path / "mlflow", basic_auth=True, host=NODE_IP).start()
    try:
        reader = ("modelyard-reader", "reader-pa55word-5678")
        server.create_user(*reader)
        number = log_iris(server, strength=1.0)
        await apply_documents(
            cluster,
            [
                *registry_documents(real_node),
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "mlflow-reader", "labels": CONSENT},
                    "type": "kubernetes.io/basic-auth",
                    "stringData": {"username": reader[0], "password": reader[1]},
                },
                mlflow_registry(server.url, credentialsSecret="mlflow-reader"),
                mlflow_weights_template(runtimes),
                {
                    "apiVersion": "modelyard.dev/v1alpha1",
                    "kind": "ModelVersion",
                    "metadata": {"name": "iris-files-1-0-0"},
                    "spec": {
                        "model": "iris-files",
                        "version": "1.0.0",
                        "registry": "mlflow",
                        "mlflow": {"name": "iris", "version": number},
                    },
                },
                weights_model("iris-files", "iris-files"),
            ],
        )
        await eventually(
            lambda: model_status(cluster, "iris-files").get("state") == "READY",
            300,
            lambda: f"iris-files READY, after {history(cluster)}",
            operator,
        )
        found = cluster.get(MODELS, cluster.namespace, "iris-files")
        assert condition(found, "Conformant")["status"] == "True", found["status"]
        pinned = cluster.get(VERSIONS, cluster.namespace, "iris-files-1-0-0")["status"]["mlflow"]
        files = pinned["files"]
        assert "model.skops" in files["sha256"], files
        (pod,) = pods_of(cluster, "iris-files")
        (step,) = pod["status"]["initContainerStatuses"]
        assert step["state"]["terminated"]["exitCode"] == 0, step
        spec = cluster.get(DEPLOYMENTS, cluster.namespace, "iris-files")["spec"]["template"]
        model_env = {e["name"]: e.get("value") for e in spec["spec"]["containers"][0]["env"]}
        assert model_env["MODEL_URI"] == "/models", model_env
        assert reader[1] not in json.dumps(spec), "the password in the pod spec"

        stored = server.root / "artifacts" / files["artifacts"].lstrip("/") / "model.skops"
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01
        stored.write_bytes(bytes(data))
        await cluster.remove(PODS, cluster.namespace, pod["metadata"]["name"])
        await eventually(
            lambda: (
                condition(cluster.get(MODELS, cluster.namespace, "iris-files")).get("reason")
                == reasons.WEIGHTS_NOT_VERIFIED
            ),
            240,
            lambda: f"iris-files WeightsNotVerified, after {history(cluster)}",
            operator,
        )
        said = condition(cluster.get(MODELS, cluster.namespace, "iris-files"))["message"]
        assert "changed since pinned: model.skops" in said, said
        (refused_pod,) = pods_of(cluster, "iris-files")
        assert all(
            "running" not in (status.get("state") or {}) and not status.get("lastState")
            for status in refused_pod["status"].get("containerStatuses") or []
        ), "the runtime started on files that changed since they were pinned"
    finally:
        await server.stop()


# -- verified in the pod, over the files the runtime loads -----------------------------------


def signing_key(directory: Path) -> tuple[Path, str]:
    """An ECDSA P-256 key pair, as `cosign generate-key-pair` makes and model-signing signs
    with: the private key's file and the public key's PEM."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / "weights-signer.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def sign_files(files: Path, private_key: Path) -> None:
    """What a model owner runs before pushing: model-signing over the directory, the signature
    beside the files (and left out of what it covers)."""
    from model_signing import hashing, signing  # noqa: PLC0415

    signing.Config().use_elliptic_key_signer(private_key=private_key).set_hashing_config(
        hashing.Config().set_ignored_paths(paths=[weights_step.SIGNATURE_FILE])
    ).sign(files, files / weights_step.SIGNATURE_FILE)


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, str]:
    files = tmp_path / "weights"
    files.mkdir()
    (files / "MLmodel").write_text("flavors: {}\n")
    (files / "model.skops").write_bytes(bytes(range(256)) * 64)
    private, public = signing_key(tmp_path)
    sign_files(files, private)
    return files, public


def test_signed_files_verify_with_the_policys_key(signed: tuple[Path, str]) -> None:
    files, public = signed
    assert weights_step.problem_with(files, [public]) is None
    _, other = signing_key(files.parent)
    # Any one key of the policy is enough, as for images.
    assert weights_step.problem_with(files, [other, public]) is None
    assert "Key mismatch" in str(weights_step.problem_with(files, [other]))


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        (
            lambda f: (f / "model.skops").write_bytes(
                b"\x01" + (f / "model.skops").read_bytes()[1:]
            ),
            "changed since signed: model.skops",
        ),
        (lambda f: (f / "model.skops").unlink(), "Missing files"),
        (lambda f: (f / "backdoor.py").write_text("import os\n"), "Extra files"),
        (lambda f: (f / weights_step.SIGNATURE_FILE).unlink(), "holds no model.sig"),
    ],
    ids=["a byte changed", "a file missing", "a file added", "no signature"],
)
def test_files_unlike_their_signed_manifest_are_refused(
    signed: tuple[Path, str], tamper: Any, said: str
) -> None:
    files, public = signed
    tamper(files)
    problem = weights_step.problem_with(files, [public])
    assert problem is not None and said in problem, problem


def test_the_init_step_exits_non_zero_and_says_why(
    signed: tuple[Path, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard import cli  # noqa: PLC0415

    files, public = signed
    monkeypatch.setenv(weights_step.KEYS_VARIABLE, public)
    assert cli.main(["verify-weights", str(files)]) == 0
    (files / "model.skops").write_bytes(b"tampered")
    assert cli.main(["verify-weights", str(files)]) == weights_step.REFUSED
    assert "changed since signed: model.skops" in capsys.readouterr().err

    # A check that cannot run (here: the files cannot be read) is not called tampering.
    def unreadable(*_: object) -> None:
        raise PermissionError(13, "Permission denied", str(files / "model.skops"))

    monkeypatch.setattr(weights_step, "problem_with", unreadable)
    assert cli.main(["verify-weights", str(files)]) == 2
    assert "the check could not run: PermissionError" in capsys.readouterr().err


def test_files_the_verifier_cannot_read_are_not_called_tampered(
    signed: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights packed 0600 for root, read by the verifier's uid: model-signing's hashing meets
    a PermissionError, which is the check failing to run, not the files failing it."""
    from model_signing import verifying  # noqa: PLC0415

    files, public = signed

    def cannot_read(*_: object) -> None:
        raise PermissionError(13, "Permission denied", str(files / "model.skops"))

    monkeypatch.setattr(verifying.Config, "verify", cannot_read)
    with pytest.raises(PermissionError):
        weights_step.problem_with(files, [public])
    assert weights_step.main(files, public) == 2
    with pytest.raises(weights_step.CannotCheck):
        weights_step.problem_with(files, [])


def enforcing_registries(keys: list[str]) -> dict[str, Any]:
    """The examples' registries, quay enforcing signatures with `keys` published."""
    quay = typed(
        "Registry",
        "quay",
        spec__signatures={"mode": "Enforce", "publicKeys": [{"secretName": "signers"}]},
    )
    status = RegistryStatus(pull_secret="quay-robot", public_keys=keys)
    return {
        **registries(),
        "quay": quay.model_copy(update={"status": status}),
        "ghcr": typed("Registry", "ghcr"),
    }


def test_a_registry_edit_does_not_block_workers_until_its_next_pass() -> None:
    """The Registry's generation moved (its check interval edited) and its pass has not run:
    the keys it published still verify, so the Model keeps its workers."""
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    config = CONFIG.model_copy(update={"weights_verifier_image": "ghcr.io/acme/modelyard:1"})
    edited = enforcing_registries([pem])
    quay = edited["quay"]
    edited["quay"] = quay.model_copy(
        update={
            "metadata": quay.metadata.model_copy(update={"generation": 7}),
            "status": quay.status.model_copy(update={"observed_generation": 6}),
        }
    )
    result = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights"),
        edited,
        [verified_weights_version()],
        config,
        allow_tag=True,
    )
    assert result.children is not None, result.checks


def test_workers_verify_enforced_weights_before_the_runtime_starts() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    config = CONFIG.model_copy(update={"weights_verifier_image": "ghcr.io/acme/modelyard:1"})
    result = plan_model(
        typed("Model", "iris-from-weights"),
        typed("ModelTemplate", "mlflow-weights"),
        enforcing_registries([pem]),
        [verified_weights_version()],
        config,
        allow_tag=True,
    )
    assert result.children is not None, result.checks
    pod = result.children.deployment["spec"]["template"]["spec"]
    (step,) = pod["initContainers"]
    assert step["name"] == weights_step.VERIFIER_CONTAINER
    assert step["image"] == "ghcr.io/acme/modelyard:1"
    assert step["args"] == ["verify-weights", "/models"]
    assert step["env"] == [{"name": weights_step.KEYS_VARIABLE, "value": pem}]
    assert pod["containers"][0]["volumeMounts"][0] in step["volumeMounts"]
    assert step["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert step["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": wl.VERIFIER_SCRATCH, "mountPath": "/tmp"} in step["volumeMounts"]

    # No verifier to run, or no keys to run it with: no workers, and the reason.
    for registries_now, settings, reason in (
        (enforcing_registries([pem]), CONFIG, reasons.WEIGHTS_VERIFIER_MISSING),
        (enforcing_registries([]), config, reasons.REGISTRY_NOT_READY),
    ):
        refused = plan_model(
            typed("Model", "iris-from-weights"),
            typed("ModelTemplate", "mlflow-weights"),
            registries_now,
            [verified_weights_version()],
            settings,
            allow_tag=True,
        )
        assert refused.children is None
        assert refused.checks[reasons.VERSION_RESOLVED].reason == reason


def verifier_pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "iris-1", "annotations": {"modelyard.dev/spec-hash": "h"}},
        "status": {
            "initContainerStatuses": [{"name": weights_step.VERIFIER_CONTAINER, **status}],
            "containerStatuses": [{"name": "model", "ready": True, "state": {"running": {}}}],
        },
    }


DEPLOYED = {
    "metadata": {"generation": 1},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1},
}
SAID = "the files do not match their signature: key 1: changed since signed: model.skops"


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": weights_step.REFUSED, "message": SAID}},
            },
            reasons.WEIGHTS_NOT_VERIFIED,
            SAID,
        ),
        (
            {"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
            reasons.VERIFIER_FAILED,
            "(OOMKilled)",
        ),
        (
            {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "401"}}},
            reasons.IMAGE_PULL_BACK_OFF,
            "cannot pull what its weights' check needs: 401",
        ),
        (
            {
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": "container has runAsNonRoot and image has non-numeric user",
                    }
                }
            },
            reasons.VERIFIER_FAILED,
            "non-numeric user",
        ),
    ],
    ids=["files refused", "verifier killed", "not pulled", "verifier cannot start"],
)
def test_what_stops_the_init_step_is_the_models_reason(
    status: dict[str, Any], reason: str, words: str
) -> None:
    # As the operator's pod store keeps it: trimmed to what decides a Model's state.
    seen = observe(DEPLOYED, [trim_pod(verifier_pod(**status))], "h", 1)
    assert seen.available.reason == reason
    assert words in seen.available.message
    assert seen.state is ModelState.FAILED


def test_a_verifier_that_passed_after_failing_once_leaves_a_serving_pod_alone() -> None:
    passed_now = verifier_pod(
        state={"terminated": {"exitCode": 0}},
        lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    )
    assert observe(DEPLOYED, [trim_pod(passed_now)], "h", 1).available.reason not in (
        reasons.VERIFIER_FAILED,
        reasons.WEIGHTS_NOT_VERIFIED,
    )


def test_weights_never_hide_the_system_or_the_verifier() -> None:
    for path in ("/usr/local/models", "/tmp", "/opt/modelyard/lib", "/etc", "/opt", "/var"):
        with pytest.raises(ValueError, match="may not be one of"):
            typed("ModelTemplate", "mlflow-weights", spec__weights={"mountPath": path})
    typed("ModelTemplate", "mlflow-weights", spec__weights={"mountPath": "/opt/ml/model"})


def render_signed_weights(tmp_path: Path, public_key: str | None = None) -> Any:
    """`modelyard render` of example 14 with its weights in example 10's enforcing Registry,
    the key Secret among the files (its key replaced by `public_key`, when given)."""
    import yaml  # noqa: PLC0415

    from modelyard.config import OperatorConfig  # noqa: PLC0415
    from modelyard.render import render  # noqa: PLC0415

    key = example("Secret", "release-signing-key")
    if public_key is not None:
        key["stringData"]["cosign.pub"] = public_key
    version = example("ModelVersion", "iris-weights-1-0-0")
    version["spec"]["registry"] = "quay-signed"
    documents = [
        key,
        example("Registry", "quay-signed"),
        example("Registry", "ghcr"),
        version,
        example("ModelTemplate", "mlflow-weights"),
        example("Model", "iris-from-weights"),
    ]
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return render([str(path)], OperatorConfig())


def test_render_shows_the_init_step_of_weights_from_an_enforcing_registry(tmp_path: Path) -> None:
    """`modelyard render` offline: the Registry's key Secret among the files gives the keys,
    and the chart's default image verifies."""
    from modelyard.render import CHART_VERIFIER_IMAGE  # noqa: PLC0415

    rendered = render_signed_weights(tmp_path)
    assert not rendered.errors, rendered.errors
    (deployment,) = [m for _, m in rendered.manifests if m["kind"] == "Deployment"]
    (step,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert step["image"] == CHART_VERIFIER_IMAGE
    key = example("Secret", "release-signing-key")["stringData"]["cosign.pub"]
    assert step["env"][0]["value"].split() == key.split()


def test_render_says_when_the_policy_has_no_key_workers_can_verify_with(tmp_path: Path) -> None:
    """Offline as on a cluster: a policy of Ed25519 keys only renders WeightsKeysUnsupported
    (model-signing verifies ECDSA keys), not a wait for keys that will never come."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    ed25519_pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    rendered = render_signed_weights(tmp_path, ed25519_pem)
    assert any(reasons.WEIGHTS_KEYS_UNSUPPORTED in error for error in rendered.errors), (
        rendered.errors
    )

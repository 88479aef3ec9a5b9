"""Versions from an MLflow model registry, against a real `mlflow server` (sqlite, loopback).

Models are registered, aliased and deleted through MLflow's own client; the operator runs on the
real control plane under the chart's RBAC; `modelyard verify` and `modelyard models` run as a
model owner's pipeline would run them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import Cluster
from support.controllers import CONSENT, DEPLOYMENTS, apply_documents, condition, events_for
from support.mlflow_server import ADMIN, MlflowServer
from support.operator_process import OperatorProcess, eventually

NS = "ml-team"
MODEL = "churn-classifier"
REGISTRIES = "modelyard.dev/v1alpha1/registries"
VERSIONS = "modelyard.dev/v1alpha1/modelversions"
MODELS = "modelyard.dev/v1alpha1/models"
SECRETS = "v1/secrets"
READER = ("modelyard-reader", "reader-pa55word-42")
IMAGE_DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def anonymous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), basic_auth=True)
    asyncio.run(server.start())
    server.create_user(*READER)
    yield server
    asyncio.run(server.stop())


def registry(url: str, name: str = "mlflow", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": {"type": "mlflow", "url": url, **spec},
    }


def secret(name: str, kind: str = "kubernetes.io/basic-auth", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def version(
    name: str, number: str, registry_name: str = "mlflow", registered: str = MODEL, **mlflow: str
) -> dict[str, Any]:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "spec": {
            "model": "churn",
            "version": number,
            "registry": registry_name,
            "mlflow": {"name": registered, **mlflow},
        },
    }


def run_cli(
    tmp_path: Path, command: str, documents: list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{command}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return subprocess.run(
        [sys.executable, "-m", "modelyard", command, "-f", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_TRACKING_", "MODELYARD_REGISTRY_"))
        },
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """`verify` output by ModelVersion name."""
    found = {}
    for line in result.stdout.splitlines():
        name = line.split()[1].split("/")[1]
        found[name] = line
    return found


# -- the CLI ------------------------------------------------------------------------------------


async def test_verify_pins_alias_and_names_what_is_missing(
    anonymous: MlflowServer, tmp_path: Path
) -> None:
    first = anonymous.register(MODEL, "s3://models/churn/1")
    anonymous.register(MODEL, "s3://models/churn/2")
    anonymous.call("set_registered_model_alias", MODEL, "champion", first)
    documents = [
        registry(anonymous.url),
        version("by-number", "1.0.0", version=first),
        version("by-alias", "1.1.0", alias="champion"),
        version("absent", "9.0.0", version="99"),
        version("no-alias", "9.1.0", alias="nobody"),
    ]
    result = run_cli(tmp_path, "verify", documents)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = lines_of(result)
    assert lines["by-number"].startswith("ok ") and f"models:/{MODEL}/{first}" in lines["by-number"]
    assert lines["by-alias"].startswith("ok ") and f"models:/{MODEL}/{first}" in lines["by-alias"]
    assert lines["absent"].startswith("FAIL") and "VersionNotFound" in lines["absent"]
    assert "99" in lines["absent"]
    assert lines["no-alias"].startswith("FAIL") and "AliasNotFound" in lines["no-alias"]
    assert "nobody" in lines["no-alias"]


async def test_models_lists_registered_models_versions_and_aliases(
    anonymous: MlflowServer, tmp_path: Path
) -> None:
    number = anonymous.register("fraud-detector", "s3://models/fraud/1")
    anonymous.call("set_registered_model_alias", "fraud-detector", "staging", number)
    run = anonymous.call("create_run", anonymous.call("create_experiment", "fraud")).info.run_id
    with_run = str(
        anonymous.call(
            "create_model_version", "fraud-detector", "s3://models/fraud/2", run_id=run
        ).version
    )
    documents = [registry(anonymous.url)]

    text = run_cli(tmp_path, "models", documents)
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"Registry {NS}/mlflow (mlflow, {anonymous.url})" in text.stdout
    assert "fraud-detector  (aliases: staging → 1)" in text.stdout
    assert f"run {run}" in text.stdout

    answer = run_cli(tmp_path, "models", documents, "--output", "json")
    assert answer.returncode == 0, answer.stderr
    (listed,) = json.loads(answer.stdout)["registries"]
    assert (listed["type"], listed["error"]) == ("mlflow", None)
    fraud = next(m for m in listed["models"] if m["name"] == "fraud-detector")
    assert fraud["aliases"] == {"staging": number}
    versions = {v["version"]: v for v in fraud["versions"]}
    assert list(versions) == [with_run, number]  # newest first
    assert versions[with_run]["run_id"] == run and versions[number]["run_id"] is None
    assert versions[number]["aliases"] == ["staging"]
    assert all(v["status"] == "READY" for v in versions.values())
    assert versions[with_run]["source"] == "s3://models/fraud/2"


async def test_cli_with_basic_auth(secured: MlflowServer, tmp_path: Path) -> None:
    number = secured.register(MODEL, "s3://models/churn/1")
    good = [
        secret("reader", username=READER[0], password=READER[1]),
        registry(secured.url, credentialsSecret="reader"),
        version("by-number", "1.0.0", version=number),
    ]
    result = run_cli(tmp_path, "verify", good)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = run_cli(tmp_path, "models", good, "-o", "json")
    assert listed.returncode == 0 and MODEL in listed.stdout

    wrong = [secret("reader", username=READER[0], password="wrong-pa55word"), *good[1:]]
    for command in ("verify", "models"):
        result = run_cli(tmp_path, command, wrong)
        assert result.returncode == 1
        assert "Unauthorized" in result.stdout
        assert "wrong-pa55word" not in result.stdout + result.stderr

    anonymous = run_cli(tmp_path, "verify", [registry(secured.url), good[2]])
    assert anonymous.returncode == 1 and "Unauthorized" in anonymous.stdout


# -- the operator -------------------------------------------------------------------------------


def template() -> list[dict[str, Any]]:
    """MLflow's serving container, from an image registry of its own."""
    return [
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "images", "namespace": NS},
            "spec": {"url": "http://127.0.0.1:9"},
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelTemplate",
            "metadata": {"name": "mlflow-pyfunc", "namespace": NS},
            "spec": {
                "modelType": "EMBEDDING",
                "image": {
                    "registry": "images",
                    "repository": "mlflow/mlflow",
                    "digest": IMAGE_DIGEST,
                },
                "env": {"MODEL_URI": "a template cannot choose the model"},
                "readiness": {"path": "/ping"},
                "resources": {"cpus": 1, "memory": "1Gi"},
                "scaling": {"minWorkers": 1, "maxWorkers": 1},
            },
        },
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "churn", "namespace": NS},
            "spec": {
                "template": "mlflow-pyfunc",
                "version": {"model": "churn", "version": ">=1.0.0 <2.0.0"},
            },
        },
    ]


def reason(cluster: Cluster, resource: str, name: str, kind: str = "Ready") -> str | None:
    return condition(cluster.get(resource, cluster.namespace, name), kind).get("reason")


def env_of(cluster: Cluster, name: str) -> dict[str, Any]:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, name) or {}
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = (containers.get("containers") or [{}])[0]
    return {
        item["name"]: item.get("value", item.get("valueFrom"))
        for item in container.get("env") or []
    }


async def test_operator_pins_serves_and_reports_an_mlflow_version(
    cluster: Cluster, operator: OperatorProcess, secured: MlflowServer
) -> None:
    first = secured.register(MODEL, "s3://models/churn/1")
    second = secured.register(MODEL, "s3://models/churn/2")
    secured.call("set_registered_model_alias", MODEL, "champion", first)
    await apply_documents(
        cluster,
        [
            secret("reader", username=READER[0], password=READER[1]),
            secret("wrong", username=READER[0], password="wrong-pa55word"),
            registry(secured.url, credentialsSecret="reader", checkIntervalSeconds=10),
            registry(secured.url, name="wrong", credentialsSecret="wrong"),
            version("churn-1-0-0", "1.0.0", alias="champion"),
            *template(),
        ],
    )
    await eventually(
        lambda: reason(cluster, REGISTRIES, "mlflow") == "Reachable", 20, "Reachable", operator
    )
    await eventually(
        lambda: reason(cluster, REGISTRIES, "wrong") == "Unauthorized", 20, "Unauthorized"
    )
    await eventually(
        lambda: reason(cluster, VERSIONS, "churn-1-0-0") == "VersionVerified",
        20,
        "VersionVerified",
        operator,
    )
    pinned = cluster.get(VERSIONS, cluster.namespace, "churn-1-0-0")["status"]["mlflow"]
    assert pinned["version"] == first and pinned["modelUri"] == f"models:/{MODEL}/{first}"
    assert pinned["source"] == "s3://models/churn/1" and pinned["createdTime"].endswith("Z")

    # The Model runs the template's image, told which model to load, credentials by reference.
    env = await eventually(lambda: env_of(cluster, "churn"), 20, "a Deployment", operator)
    assert env["MODEL_URI"] == f"models:/{MODEL}/{first}"
    assert env["MLFLOW_TRACKING_URI"] == secured.url
    assert env["MLFLOW_TRACKING_PASSWORD"] == {
        "secretKeyRef": {"name": "reader", "key": "password", "optional": True}
    }
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, "churn")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(IMAGE_DIGEST)

    # The alias moves in MLflow: reported once, never followed.
    secured.call("set_registered_model_alias", MODEL, "champion", second)
    await eventually(
        lambda: reason(cluster, VERSIONS, "churn-1-0-0", "AliasCurrent") == "AliasMoved",
        30,
        lambda: f"AliasMoved: {cluster.get(VERSIONS, cluster.namespace, 'churn-1-0-0')}",
    )
    status = cluster.get(VERSIONS, cluster.namespace, "churn-1-0-0")["status"]
    assert status["mlflow"]["version"] == first and status["mlflow"]["aliasVersion"] == second
    assert condition(cluster.get(VERSIONS, cluster.namespace, "churn-1-0-0"))["status"] == "True"
    moved = [e for e in events_for(cluster, "churn-1-0-0") if e["reason"] == "AliasMoved"]
    assert len(moved) == 1 and moved[0]["type"] == "Warning"
    assert env_of(cluster, "churn")["MODEL_URI"] == f"models:/{MODEL}/{first}"

    # The pinned version is deleted in MLflow: the version stops being Ready, the Model keeps
    # running it and says why nothing new rolls out.
    secured.call("delete_model_version", MODEL, first)
    await eventually(
        lambda: reason(cluster, VERSIONS, "churn-1-0-0") == "VersionNotFound",
        30,
        "VersionNotFound",
        operator,
    )
    await eventually(
        lambda: reason(cluster, MODELS, "churn", "VersionResolved") == "VersionNotReady",
        20,
        "VersionNotReady",
        operator,
    )
    assert env_of(cluster, "churn")["MODEL_URI"] == f"models:/{MODEL}/{first}"

    # The server stops and comes back: Unreachable, then Reachable again, with no restart.
    await secured.stop()
    try:
        await eventually(
            lambda: reason(cluster, REGISTRIES, "mlflow") == "Unreachable",
            30,
            "Unreachable",
            operator,
        )
    finally:
        await secured.start()
    await eventually(
        lambda: reason(cluster, REGISTRIES, "mlflow") == "Reachable",
        30,
        "Reachable again",
        operator,
    )

    leaked = (READER[1], "wrong-pa55word", ADMIN[1])
    for word in leaked:
        assert word not in operator.output
        assert all(word not in str(e) for e in cluster.list("v1/events"))
        for resource in (REGISTRIES, VERSIONS, MODELS):
            assert all(word not in str(r.get("status")) for r in cluster.list(resource))


def log_wine(server: MlflowServer, *, example: bool) -> str:
    """A wine classifier trained now from the data scikit-learn ships, logged (with an input
    example, from which MLflow infers the signature, or without: no signature) and registered
    as `wine`; its version number."""
    from sklearn.datasets import load_wine  # noqa: PLC0415 -- slow; only this test needs it
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    features, labels = load_wine(return_X_y=True, as_frame=True)
    features = features[["alcohol", "malic_acid", "color_intensity"]]
    classifier = LogisticRegression(max_iter=1000).fit(features, labels)
    extra = {"input_example": features.head(2)} if example else {}
    return server.log_model(
        "wine", lambda mlflow: mlflow.sklearn.log_model(classifier, name="model", **extra)
    )


async def test_a_logged_models_signature_lands_in_the_version_status(
    cluster: Cluster, operator: OperatorProcess, secured: MlflowServer
) -> None:
    """The operator reads the signature of a verified version from its MLmodel file, through
    the tracking server's proxied artifacts with the Registry's credentials; a model logged
    without one records none, and a version whose files the server does not serve (s3://) is
    Ready all the same."""
    signed = log_wine(secured, example=True)
    unsigned = log_wine(secured, example=False)
    elsewhere = secured.register("wine", "s3://models/wine/3")
    await apply_documents(
        cluster,
        [
            secret("reader", username=READER[0], password=READER[1]),
            registry(secured.url, credentialsSecret="reader"),
            *(
                version(f"wine-{n}", f"1.0.{n}", registered="wine", version=n)
                for n in (signed, unsigned, elsewhere)
            ),
        ],
    )
    for number in (signed, unsigned, elsewhere):
        await eventually(
            lambda n=number: reason(cluster, VERSIONS, f"wine-{n}") == "VersionVerified",
            30,
            f"wine {number} VersionVerified",
            operator,
        )
    pinned = cluster.get(VERSIONS, cluster.namespace, f"wine-{signed}")["status"]["mlflow"]
    assert pinned["signature"] == {
        "inputs": [
            {"name": name, "type": "double", "required": True}
            for name in ("alcohol", "malic_acid", "color_intensity")
        ]
    }
    for number in (unsigned, elsewhere):
        status = cluster.get(VERSIONS, cluster.namespace, f"wine-{number}")["status"]
        assert "signature" not in status["mlflow"], status
    assert "cannot read the signature" not in operator.output
    assert READER[1] not in operator.output
    # Pinned by content once verified (the pass after): each file's SHA-256 as the artifact
    # store holds it.
    files = await eventually(
        lambda: cluster.get(VERSIONS, cluster.namespace, f"wine-{signed}")["status"]["mlflow"].get(
            "files"
        ),
        30,
        "the files pinned",
        operator,
    )
    stored = on_disk(secured, files["artifacts"])
    assert files["sha256"] == {name: sha256_of(path) for name, path in stored.items()}
    assert {"MLmodel", "model.skops"} <= set(files["sha256"]), files
    assert files["sizeBytes"] == sum(path.stat().st_size for path in stored.values())
    assert files["digest"].startswith("sha256:")
    elsewhere_status = cluster.get(VERSIONS, cluster.namespace, f"wine-{elsewhere}")["status"]
    assert "files" not in elsewhere_status["mlflow"], "files the server does not serve, pinned"


def on_disk(server: MlflowServer, artifacts: str) -> dict[str, Path]:
    """A version's files as the tracking server's artifact store keeps them, by path."""
    root = server.root / "artifacts" / artifacts.lstrip("/")
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def sha256_of(path: Path) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(
    server: MlflowServer, pinned: dict[str, Any], target: Path, password: str = READER[1]
) -> subprocess.CompletedProcess[str]:
    """A worker's init step, as the pod runs it: `modelyard fetch-mlflow-weights` with the
    environment the operator gives it."""
    from modelyard import weights  # noqa: PLC0415

    return subprocess.run(
        [sys.executable, "-m", "modelyard", "fetch-mlflow-weights", str(target)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_USERNAME": READER[0],
            "MLFLOW_TRACKING_PASSWORD": password,
            weights.ARTIFACTS_VARIABLE: pinned["artifacts"],
            weights.PINNED_VARIABLE: json.dumps(pinned["sha256"]),
            weights.PINNED_BYTES_VARIABLE: str(pinned["sizeBytes"]),
        },
    )


async def test_workers_fetch_the_pinned_files_and_refuse_any_that_changed_since(
    cluster: Cluster, operator: OperatorProcess, secured: MlflowServer, tmp_path: Path
) -> None:
    """The init step of a worker whose template loads files from its weights path, against
    the real tracking server, with the files the operator pinned: fetched whole and as pinned;
    after a file is changed in the artifact store (a compromised bucket, an overwritten run),
    refused by name, exit 3 — the runtime would never start on it; wrong credentials are a
    check that could not run (exit 2), said without the password."""
    number = log_wine(secured, example=True)
    await apply_documents(
        cluster,
        [
            secret("reader", username=READER[0], password=READER[1]),
            registry(secured.url, credentialsSecret="reader"),
            version("wine-pinned", "2.0.0", registered="wine", version=number),
        ],
    )
    await eventually(
        lambda: (
            ((cluster.get(VERSIONS, cluster.namespace, "wine-pinned") or {}).get("status") or {})
            .get("mlflow", {})
            .get("files")
        ),
        30,
        "the version's files pinned",
        operator,
    )
    pinned = cluster.get(VERSIONS, cluster.namespace, "wine-pinned")["status"]["mlflow"]["files"]
    first = fetch(secured, pinned, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    fetched = {
        str(p.relative_to(tmp_path / "first")): sha256_of(p)
        for p in (tmp_path / "first").rglob("*")
        if p.is_file()
    }
    assert fetched == pinned["sha256"]

    stored = on_disk(secured, pinned["artifacts"])["model.skops"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    refused = fetch(secured, pinned, tmp_path / "second")
    assert refused.returncode == weights_refused(), refused.stderr
    assert "changed since pinned: model.skops" in refused.stderr, refused.stderr

    wrong = fetch(secured, pinned, tmp_path / "third", password="not-the-password")
    assert wrong.returncode == 2, wrong.stderr
    assert "401" in wrong.stderr and "not-the-password" not in wrong.stderr, wrong.stderr


def weights_refused() -> int:
    from modelyard import weights  # noqa: PLC0415

    return weights.REFUSED


def test_credentials_secret_shapes_become_the_header_mlflow_takes() -> None:
    """Databricks-style tokens have no server here (MLflow's own server only has basic auth):
    what the operator sends for each Secret shape is checked directly."""
    from modelyard.registry.credentials import SecretInvalid, mlflow_from_secret  # noqa: PLC0415
    from modelyard.registry.mlflow import authorization  # noqa: PLC0415

    token = mlflow_from_secret(secret("pat", "Opaque", token="dapi-123"))
    assert authorization(token) == "Bearer dapi-123" and "dapi-123" not in repr(token)
    basic = mlflow_from_secret(secret("reader", username="u", password="p"))
    assert authorization(basic) == "Basic " + base64.b64encode(b"u:p").decode()
    assert authorization(
        mlflow_from_secret(secret("both", "Opaque", username="u", password="p", token="t"))
    ).startswith("Basic ")
    with pytest.raises(SecretInvalid, match="username and password"):
        mlflow_from_secret(secret("empty", "Opaque", other="x"))

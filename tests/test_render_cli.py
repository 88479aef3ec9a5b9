"""`modelyard render -f`, run as a user runs it: a process, its stdout, stderr and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import Session
from support.examples import EXAMPLES, example


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def write(tmp_path: Path, *documents: dict[str, Any]) -> Path:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return path


def test_render_examples_prints_valid_children(session: Session) -> None:
    result = run("render", "-f", str(EXAMPLES))
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    kinds = [(d["apiVersion"], d["kind"]) for d in documents]
    assert ("apps/v1", "Deployment") in kinds
    assert ("v1", "Service") in kinds
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") in kinds
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds
    # Reranker, embedder, chat, MLflow churn classifier, the quickstart's sample embedder, and
    # the three real runtimes' Models (MLflow's scoring server, DEEPaaS, MLServer), and the
    # Model whose weights are mounted into MLflow's scoring server, and the one whose MLflow
    # version's pinned files are fetched into the same runtime.
    assert len([k for k in kinds if k[1] == "Deployment"]) == 11
    # What `modelyard render | kubectl apply --server-side --dry-run=server -f -` would say.
    for namespace in ("ml-team", "quickstart"):
        session.api.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    for document in documents:
        session.api.apply(document, "modelyard", dry_run=True)
        assert session.api.warnings == [], (document["kind"], session.api.warnings)
    assert "# Source: " in result.stdout
    # Offline, an MLflow alias cannot be pinned: MLflow's own alias URI stands in for the number.
    churn = next(d for d in documents if d["metadata"]["name"] == "churn")
    env = {e["name"]: e for e in churn["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_URI"]["value"] == "models:/churn-classifier@champion"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-reader"
    # MLflow's scoring server is told which version to load through $(MODEL_URI).
    iris = next(
        d for d in documents if d["metadata"]["name"] == "iris" and d["kind"] == "Deployment"
    )
    container = iris["spec"]["template"]["spec"]["containers"][0]
    assert "$(MODEL_URI)" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"MODEL_URI", "MLFLOW_TRACKING_URI"}


def test_seed_reranker_renders_as_the_guide_describes() -> None:
    result = run(
        "render",
        "-f",
        str(EXAMPLES / "03-reranker-template.yaml"),
        "-f",
        str(EXAMPLES / "04-reranker-model.yaml"),
    )
    assert result.returncode == 0, result.stderr
    by_kind = {d["kind"]: d for d in yaml.safe_load_all(result.stdout)}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for side in ("requests", "limits"):
        assert container["resources"][side] == {
            "cpu": "1",
            "memory": "8Gi",
            "ephemeral-storage": "16Gi",
            "nvidia.com/gpu": "1",
        }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert container["readinessProbe"]["initialDelaySeconds"] == 120
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "DEVICE": "cuda",
        "MODEL_BUCKET": "my-bucket",
        "MODEL_PATH": "finetuned-cross-encoder_ms-marco-MiniLM-L-12-v2.tar.gz",
    }
    scaled = by_kind["ScaledObject"]["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 1)


def test_missing_required_parameter_names_parameter_and_template(tmp_path: Path) -> None:
    model = example("Model", "my-reranking-model")
    del model["spec"]["parameters"]["MODEL_PATH"]
    path = write(
        tmp_path,
        example("Registry", "dockerhub"),
        example("ModelTemplate", "custom-reranking-model-template"),
        model,
    )
    result = run("render", "-f", str(path))
    assert result.returncode == 1
    assert "ParametersInvalid" in result.stderr
    assert "MODEL_PATH" in result.stderr and "custom-reranking-model-template" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda docs: docs[2]["spec"].update(template="missing"), "TemplateNotFound"),
        (
            lambda docs: docs[1]["spec"]["resources"].update(gpuType="nvidia-volta-v100"),
            "UnknownGpuType",
        ),
        (
            lambda docs: docs[1]["spec"]["scaling"].update(minWorkers=5),
            "minWorkers (5) must not exceed maxWorkers (1)",
        ),
        (
            lambda docs: docs[2]["spec"].update(parameters={"MODEL_PATH": "p", "TYPO": 1}),
            "unknown parameter TYPO",
        ),
        (lambda docs: docs[0]["spec"].update(url="docker.io"), "http:// or https:// URL"),
    ],
)
def test_each_invalid_input_is_one_clear_error(tmp_path: Path, mutate: Any, expected: str) -> None:
    documents = [
        example("Registry", "dockerhub"),
        example("ModelTemplate", "custom-reranking-model-template"),
        example("Model", "my-reranking-model"),
    ]
    mutate(documents)
    result = run("render", "-f", str(write(tmp_path, *documents)))
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_input_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    result = run("render", "-f", str(broken))
    assert result.returncode == 1 and "not valid YAML" in result.stderr
    result = run("render", "-f", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_custom_gpu_map_from_operator_configuration(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gpuTypes": {
                    "nvidia-ampere-a10": {
                        "resourceName": "nvidia.com/gpu",
                        "nodeSelector": {"cloud.example/accelerator": "a10"},
                        "tolerations": [
                            {
                                "key": "gpu-pool",
                                "operator": "Equal",
                                "value": "true",
                                "effect": "NoSchedule",
                            }
                        ],
                    }
                }
            }
        )
    )
    result = run(
        "render",
        "--config",
        str(config),
        "-f",
        str(EXAMPLES / "03-reranker-template.yaml"),
        "-f",
        str(EXAMPLES / "04-reranker-model.yaml"),
    )
    assert result.returncode == 0, result.stderr
    pod = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")["spec"][
        "template"
    ]["spec"]
    assert pod["nodeSelector"] == {"cloud.example/accelerator": "a10"}
    assert pod["tolerations"][0]["key"] == "gpu-pool"

"""The Helm chart, rendered by a real helm binary and checked against Kubernetes schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelyard import config as operator_config
from modelyard.api import crds
from support.helm import Helm, helm_binary

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "modelyard"

NON_DEFAULT = [
    "--set",
    "watchNamespaces[0]=ml-team",
    "--set",
    "watchNamespaces[1]=research",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "priorityClass.create=true",
    "--set-json",
    'config.gpuTypes={"nvidia-l4":{"resourceName":"nvidia.com/gpu","nodeSelector":{"cloud.example/gpu":"l4"}}}',
]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm")
    return Helm(helm_binary(home / "bin"), home)


def render(helm: Helm, *args: str) -> list[dict[str, Any]]:
    result = helm.run("template", "modelyard", str(CHART), "--namespace", "modelyard-system", *args)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


@pytest.mark.parametrize(
    "values", [[], NON_DEFAULT], ids=["default", "namespaced+servicemonitor+gpus"]
)
def test_lint_passes(helm: Helm, values: list[str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "values", [[], NON_DEFAULT], ids=["default", "namespaced+servicemonitor+gpus"]
)
def test_every_rendered_object_is_valid_kubernetes(helm: Helm, values: list[str]) -> None:
    documents = render(helm, *values)
    for document in documents:
        if document["kind"] == "ServiceMonitor":
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            continue  # a custom resource: kubernetes-validate has no schema for it
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


def test_no_wildcards_in_any_role(helm: Helm) -> None:
    for values in ([], NON_DEFAULT):
        for role in [d for d in render(helm, *values) if d["kind"] in ("Role", "ClusterRole")]:
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: {rule}"


def test_chart_crds_equal_crds_dir(helm: Helm) -> None:
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        assert (CHART / "files" / "crds" / path.name).read_text() == path.read_text(), (
            "run `make crds`"
        )
    rendered = {d["metadata"]["name"]: d for d in by_kind(render(helm), "CustomResourceDefinition")}
    for generated in crds.generate():
        chart_copy = rendered[generated["metadata"]["name"]]
        assert chart_copy["spec"] == generated["spec"]
        assert chart_copy["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert by_kind(render(helm, "--set", "crds.install=false"), "CustomResourceDefinition") == []


def test_operator_deployment_is_locked_down(helm: Helm) -> None:
    deployment = by_kind(render(helm), "Deployment")[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]


def test_configuration_from_values_is_what_the_operator_reads(helm: Helm, tmp_path: Path) -> None:
    configmap = by_kind(render(helm, *NON_DEFAULT), "ConfigMap")[0]
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    loaded = operator_config.load(path)
    assert loaded.gpu_types["nvidia-l4"].node_selector == {"cloud.example/gpu": "l4"}
    assert "nvidia-hopper-h100" in loaded.gpu_types, "values extend the default GPU map"
    assert loaded.metrics_port == 8000
    default = by_kind(render(helm), "ConfigMap")[0]
    path.write_text(default["data"]["config.yaml"])
    assert operator_config.load(path).gpu_types == operator_config.OperatorConfig().gpu_types


def test_namespaced_mode_uses_roles_and_watches_only_those_namespaces(helm: Helm) -> None:
    documents = render(helm, *NON_DEFAULT)
    roles = by_kind(documents, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team", "research"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(documents, "RoleBinding")) == [
        "ml-team",
        "research",
    ]
    assert not [
        c for c in by_kind(documents, "ClusterRole") if c["metadata"]["name"].endswith("-operator")
    ]
    crd_reader = next(
        c
        for c in by_kind(documents, "ClusterRole")
        if c["metadata"]["name"].endswith("-crd-reader")
    )
    assert crd_reader["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        }
    ]
    args = by_kind(documents, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml-team" in args and "--namespace=research" in args
    assert by_kind(documents, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == "metrics"
    assert by_kind(documents, "PriorityClass")[0]["metadata"]["name"] == "modelyard-high-priority"


def test_user_roles_aggregate_into_the_builtin_ones(helm: Helm) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render(helm), "ClusterRole")}
    labels = {name: role["metadata"]["labels"] for name, role in roles.items()}
    assert labels["modelyard-view"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert labels["modelyard-edit"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["modelyard-admin"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    manager = roles["modelyard-model-manager"]["rules"]
    assert {"create", "delete"} <= set(
        next(r for r in manager if r["resources"] == ["modelversions"])["verbs"]
    )
    edit_resources = {res for rule in roles["modelyard-edit"]["rules"] for res in rule["resources"]}
    assert edit_resources == {"models"}, (
        "editors run models; templates and versions are published by others"
    )


@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "watchNamespaces[0]=Not_A_Namespace"], "watchNamespaces"),
        (["--set", "metrics.port=70000"], "port"),
        (["--set", "unknownKey=1"], "unknownKey"),
    ],
)
def test_values_schema_refuses_bad_values(helm: Helm, flag: list[str], fragment: str) -> None:
    result = helm.run("template", "modelyard", str(CHART), *flag, check=False)
    assert result.returncode != 0 and fragment in result.stderr


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)

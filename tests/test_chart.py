"""The Helm chart: rendered by a real helm binary, and installed, upgraded and uninstalled by it
on a real API server, as a new user would on an empty cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelyard import config as operator_config
from modelyard.api import crds
from support import control_plane
from support.api import Api
from support.cluster import Session
from support.helm import Helm, helm_binary, kubectl_binary

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
def test_every_rendered_object_is_accepted_by_the_api_server(
    helm: Helm, session: Session, values: list[str]
) -> None:
    """A dry-run apply of every object, with strict field validation, on the real server."""
    for namespace in ("modelyard-system", "ml-team", "research"):
        session.api.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    for document in render(helm, *values):
        if document["kind"] == "ServiceMonitor":
            # The prometheus-operator's CRD is not installed on the test cluster.
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        session.api.apply(document, "helm", dry_run=True)


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
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]


def test_two_replicas_share_one_lease_and_survive_a_drain(helm: Helm) -> None:
    documents = render(helm)
    spec = by_kind(documents, "Deployment")[0]["spec"]
    assert spec["replicas"] == 2
    # The new pod starts before the old one stops (and gives the Lease up).
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert "--leader-elect" in pod["containers"][0]["args"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in pod["containers"][0]["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    preferred = pod["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (spec["selector"]["matchLabels"])
    )
    budget = by_kind(documents, "PodDisruptionBudget")[0]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == spec["selector"]
    # The Lease, and only it, in the operator's own namespace.
    lease_role = next(
        r for r in by_kind(documents, "Role") if r["metadata"]["name"].endswith("-leader-election")
    )
    assert lease_role["metadata"]["namespace"] == "modelyard-system"
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["modelyard-leader"],
            "verbs": ["get", "update"],
        },
    ]
    binding = next(
        b
        for b in by_kind(documents, "RoleBinding")
        if b["metadata"]["name"].endswith("-leader-election")
    )
    assert binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    # One replica: no budget that would block every drain.
    assert not by_kind(render(helm, "--set", "replicaCount=1"), "PodDisruptionBudget")


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


def test_the_operator_refuses_a_lease_duration_the_lease_cannot_hold(tmp_path: Path) -> None:
    """Whole seconds only: the Lease stores an integer, which is what a standby waits for."""
    path = tmp_path / "config.yaml"
    path.write_text("leaderElection: {leaseDurationSeconds: 10.4, renewDeadlineSeconds: 10.2}\n")
    with pytest.raises(operator_config.ConfigError, match="leaseDurationSeconds"):
        operator_config.load(path)
    path.write_text("leaderElection: {leaseDurationSeconds: 11, renewDeadlineSeconds: 10.2}\n")
    assert operator_config.load(path).leader_election.lease_duration_seconds == 11


def test_namespaced_mode_uses_roles_and_watches_only_those_namespaces(helm: Helm) -> None:
    documents = render(helm, *NON_DEFAULT)
    roles = [r for r in by_kind(documents, "Role") if r["metadata"]["name"].endswith("-operator")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml-team", "research"]
    bindings = [
        b for b in by_kind(documents, "RoleBinding") if b["metadata"]["name"].endswith("-operator")
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["ml-team", "research"]
    # Nothing cluster-wide: the operator watches only the namespaces it serves.
    cluster_roles = {c["metadata"]["name"] for c in by_kind(documents, "ClusterRole")}
    assert cluster_roles == {
        "modelyard-view",
        "modelyard-edit",
        "modelyard-admin",
        "modelyard-model-manager",
    }, "only the users' roles"
    assert not by_kind(documents, "ClusterRoleBinding")
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
        # The Lease holds whole seconds; a fraction would be rounded where standbys read it.
        (["--set", "config.leaderElection.leaseDurationSeconds=10.4"], "leaseDurationSeconds"),
    ],
)
def test_values_schema_refuses_bad_values(helm: Helm, flag: list[str], fragment: str) -> None:
    result = helm.run("template", "modelyard", str(CHART), *flag, check=False)
    assert result.returncode != 0 and fragment in result.stderr


def test_values_schema_is_valid_json_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


# -- on an empty cluster ------------------------------------------------------------------------


@pytest.fixture
def empty_cluster(tmp_path: Path) -> Iterator[control_plane.ControlPlane]:
    """A control plane of its own, with nothing installed: what a new user starts from."""
    plane = control_plane.start(tmp_path / "cluster")
    yield plane
    plane.stop(grace=1)


def kubectl(plane: control_plane.ControlPlane, tmp: Path, *args: str) -> str:
    result = subprocess.run(
        [str(kubectl_binary(tmp / "bin")), "--kubeconfig", str(plane.kubeconfig), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def test_kubectl_applies_the_crds_then_the_examples(
    empty_cluster: control_plane.ControlPlane, tmp_path: Path
) -> None:
    """The README's steps, word for word. On an empty cluster kubectl cannot map the new kinds in
    the command that creates their CRDs, so the CRDs go first; once they are in (as `make
    cluster` leaves them), one command applies both."""
    kubectl(empty_cluster, tmp_path, "apply", "--server-side", "-f", "crds/")
    kubectl(empty_cluster, tmp_path, "wait", "--for=condition=Established", "crd", "--all")
    kubectl(empty_cluster, tmp_path, "apply", "--server-side", "-f", "crds/", "-f", "examples/")
    listed = kubectl(empty_cluster, tmp_path, "get", "modelyard", "-n", "ml-team", "-o", "name")
    assert {"model.modelyard.dev/docs-embedder", "registry.modelyard.dev/quay"} <= set(
        listed.split()
    )
    # The server publishes a new CRD's OpenAPI a moment after it is Established; until then
    # kubectl explain answers "couldn't find resource", as it would for a user.
    deadline = time.monotonic() + 30
    while True:
        try:
            explained = kubectl(empty_cluster, tmp_path, "explain", "model.spec.scaling.minWorkers")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert "Fewest workers" in explained


def test_helm_installs_upgrades_and_uninstalls_keeping_crds_and_models(
    empty_cluster: control_plane.ControlPlane, tmp_path: Path
) -> None:
    api = Api(empty_cluster.server, empty_cluster.pki)
    helm = Helm(helm_binary(tmp_path / "bin"), tmp_path, empty_cluster.kubeconfig)
    release = ["modelyard", "--namespace", "modelyard-system"]
    helm.run("install", *release, str(CHART), "--create-namespace")
    crd_names = sorted(crd["metadata"]["name"] for crd in crds.generate())
    for name in crd_names:
        api.wait_established(name)
    assert api.get("apps/v1/deployments", "modelyard-system", "modelyard") is not None
    assert api.get("rbac.authorization.k8s.io/v1/clusterroles", None, "modelyard-operator")

    # Users' objects are accepted by the CRDs the chart installed.
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                api.apply(document)

    # An upgrade carries a changed CRD to the server.
    changed = tmp_path / "chart"
    shutil.copytree(CHART, changed)
    crd_path = changed / "files" / "crds" / "models.modelyard.dev.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["owner"] = {"type": "string", "description": "Who runs it."}
    crd_path.write_text(yaml.safe_dump(crd, sort_keys=False))
    helm.run("upgrade", *release, str(changed))
    served = api.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, crd_names[0])
    assert served is not None
    properties = served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert "owner" in properties["spec"]["properties"], "the upgrade changed the CRD"

    # Uninstall removes the operator, never the CRDs or what users made with them.
    helm.run("uninstall", *release)
    assert "modelyard" not in helm.run("list", "-A", "-q").stdout.split()
    api.wait_gone("apps/v1/deployments", "modelyard-system", "modelyard")
    for name in crd_names:
        assert api.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, name)
    assert api.get("modelyard.dev/v1alpha1/models", "ml-team", "docs-embedder") is not None

    # Installing again adopts the CRDs it kept.
    helm.run("install", *release, str(CHART))

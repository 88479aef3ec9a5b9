"""The generated CRDs: in sync with the models, documented, and installed by a real API server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.api import crds
from support.cluster import Session
from support.helm import kubectl_binary

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = {path.name: path.read_text() for path in sorted((ROOT / "crds").glob("*.yaml"))}
GENERATED = crds.generate()


def iter_schema_nodes(
    schema: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema, with a readable path."""
    yield path or "<root>", schema
    for name, child in schema.get("properties", {}).items():
        yield from iter_schema_nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_schema_nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from iter_schema_nodes(schema["items"], f"{path}[]")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


ids = [crd["spec"]["names"]["kind"] for crd in GENERATED]


def test_committed_crds_equal_generated_ones() -> None:
    """`make crds` was run after the last change to the API models."""
    generated = {crds.file_name(crd): crds.render(crd) for crd in GENERATED}
    assert sorted(COMMITTED) == sorted(generated), "run `make crds`"
    for name, text in generated.items():
        assert COMMITTED[name] == text, f"{name} drifted from the models: run `make crds`"


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_the_api_server_installs_it_and_serves_it(session: Session, crd: dict[str, Any]) -> None:
    """Installed by the session through server-side apply; here the server's verdict: the
    schema is structural, every CEL rule compiled within its cost budget, the names are taken,
    and a fresh apply of the generated CRD raises no warning."""
    api = session.api
    name = crd["metadata"]["name"]
    served = api.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, name)
    assert served is not None
    conditions = {c["type"]: c for c in served["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    assert "NonStructuralSchema" not in conditions
    api.apply(crd, "modelyard-tests", dry_run=True)
    assert api.warnings == [], api.warnings


def test_kubectl_explain_has_every_description(session: Session) -> None:
    """`kubectl explain` reads the server's published OpenAPI v3: the descriptions made it."""
    document = session.api.request("GET", "/openapi/v3/apis/modelyard.dev/v1alpha1")
    schemas = document["components"]["schemas"]
    model = schemas["dev.modelyard.v1alpha1.Model"]
    scaling = model["properties"]["spec"]["properties"]["scaling"]
    assert "minWorkers" in scaling["properties"]
    assert scaling["properties"]["minWorkers"]["description"].startswith("Fewest workers")
    # kubectl explain model.spec.rollout: every field says what it does.
    rollout = model["properties"]["spec"]["properties"]["rollout"]["properties"]
    assert set(rollout) == {"strategy", "canaryWorkers", "analysisSeconds", "allowCapacityDip"}
    assert rollout["strategy"]["description"].startswith("How a new revision")
    assert all(field["description"] for field in rollout.values())
    template = schemas["dev.modelyard.v1alpha1.ModelTemplate"]
    assert "rollout" in template["properties"]["spec"]["properties"]


def test_kubectl_explain_registry_signatures(session: Session, tmp_path: Path) -> None:
    """The real kubectl, asking the real server, documents every field of a signature policy."""
    kubectl = str(kubectl_binary(ROOT / ".cache" / "bin"))

    def explain(field: str) -> str:
        result = subprocess.run(
            [kubectl, "--kubeconfig", str(session.plane.kubeconfig), "explain", field],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    policy = explain("registry.spec.signatures")
    words = " ".join(policy.split())  # descriptions wrap at the terminal's width
    assert "Require cosign signatures on every image from this registry" in words
    assert "mode\t<string>" in policy and "`Enforce` (the default)" in words
    assert "enum: Enforce, Warn" in words
    assert "publicKeys\t<[]Object> -required-" in policy and "sha256-<hex>.sig" in words
    key = explain("registry.spec.signatures.publicKeys")
    words = " ".join(key.split())
    assert "secretName\t<string> -required-" in key and "modelyard.dev/use=true" in words
    assert "key\t<string>" in key and "Default cosign.pub" in words


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_every_property_has_a_description(crd: dict[str, Any]) -> None:
    missing = []
    for path, node in iter_schema_nodes(_schema(crd)):
        for name, child in node.get("properties", {}).items():
            if not str(child.get("description", "")).strip():
                missing.append(f"{path}.{name}")
    assert missing == [], f"`kubectl explain` would show nothing for: {missing}"


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_every_rule_explains_itself(crd: dict[str, Any]) -> None:
    """A refusal reads as a sentence, never as the CEL expression that made it."""
    rules = [
        entry
        for _, node in iter_schema_nodes(_schema(crd))
        for entry in node.get("x-kubernetes-validations", [])
    ]
    assert rules, "every kind has cross-field rules"
    assert all(entry.get("message") for entry in rules), rules


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_kubectl_get_shows_ready_and_reason(crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert "Age" in columns
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["modelyard"]
    assert crd["spec"]["scope"] == "Namespaced"


def test_names_and_columns_per_kind() -> None:
    by_kind = {crd["spec"]["names"]["kind"]: crd for crd in GENERATED}
    short = {kind: crd["spec"]["names"]["shortNames"] for kind, crd in by_kind.items()}
    assert short == {
        "Registry": ["reg"],
        "ModelTemplate": ["mt"],
        "ModelVersion": ["mv"],
        "Model": ["mdl"],
    }
    plurals = {kind: crd["metadata"]["name"] for kind, crd in by_kind.items()}
    assert plurals["Registry"] == "registries.modelyard.dev"
    model_columns = [
        c["name"] for c in by_kind["Model"]["spec"]["versions"][0]["additionalPrinterColumns"]
    ]
    for column in ("Template", "Version", "State", "Replicas", "Rollout", "Endpoint"):
        assert column in model_columns


def test_crd_files_parse_as_single_documents() -> None:
    for name, text in COMMITTED.items():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1, name
        assert documents[0]["kind"] == "CustomResourceDefinition"


def test_a_registry_without_type_shows_oci(session: Session) -> None:
    """The server applies the default, so the TYPE column of `kubectl get registries` says
    what the operator assumes."""
    registry = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "untyped", "namespace": "default"},
        "spec": {"url": "https://quay.io"},
    }
    stored = session.api.apply(registry, "modelyard-tests", dry_run=True)
    assert stored["spec"]["type"] == "oci"

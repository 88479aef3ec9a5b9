"""The generated CRDs: in sync with the models, structural, documented, and valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelyard.api import crds
from support.crd_validation import compile_rule, iter_schema_nodes

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = {path.name: path.read_text() for path in sorted((ROOT / "crds").glob("*.yaml"))}
GENERATED = crds.generate()


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
def test_crd_is_a_valid_kubernetes_object(crd: dict[str, Any]) -> None:
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_every_property_has_a_description(crd: dict[str, Any]) -> None:
    missing = []
    for path, node in iter_schema_nodes(_schema(crd)):
        for name, child in node.get("properties", {}).items():
            if not str(child.get("description", "")).strip():
                missing.append(f"{path}.{name}")
    assert missing == [], f"`kubectl explain` would show nothing for: {missing}"


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    """The rules the apiserver applies before it accepts a CRD (apiextensions v1)."""
    problems = []
    for path, node in iter_schema_nodes(_schema(crd)):
        if "<" in path:
            continue
        untyped_ok = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "type" not in node and not untyped_ok:
            problems.append(f"{path}: no type")
        for forbidden in ("$ref", "$defs", "propertyNames", "title", "default", "const"):
            if forbidden in node:
                problems.append(f"{path}: {forbidden} is not allowed")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false is not allowed")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties are exclusive")
        for junctor in ("anyOf", "allOf", "oneOf"):
            for branch in node.get(junctor, []):
                for key in ("type", "description", "default", "nullable", "additionalProperties"):
                    if key in branch:
                        problems.append(f"{path}: {key} inside {junctor}")
    assert problems == []


@pytest.mark.parametrize("crd", GENERATED, ids=ids)
def test_cel_rules_compile_and_explain_themselves(crd: dict[str, Any]) -> None:
    rules = [
        entry
        for _, node in iter_schema_nodes(_schema(crd))
        for entry in node.get("x-kubernetes-validations", [])
    ]
    assert rules, "every kind has cross-field rules"
    for entry in rules:
        compile_rule(entry["rule"])
        assert entry["message"], f"rule without a message: {entry['rule']}"


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
    for column in ("Template", "Version", "State", "Replicas", "Endpoint"):
        assert column in model_columns


def test_crd_files_parse_as_single_documents() -> None:
    for name, text in COMMITTED.items():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1, name
        assert documents[0]["kind"] == "CustomResourceDefinition"

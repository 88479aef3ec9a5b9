"""CustomResourceDefinitions generated from the pydantic models.

`kube-custom-resource` does the heavy lifting (inlined refs, no titles, no defaults, int-or-string,
preserve-unknown-fields, names and printer columns). What it leaves for us is what a structural
schema forbids or what makes `kubectl explain` less useful:

- `anyOf: [X, {type: null}]` from optional fields becomes plain X: an omitted field is how
  Kubernetes spells "unset", and `nullable` would let `null` through to the operator;
- defaults are dropped (pydantic applies them where the operator reads), except the few in
  `SERVER_DEFAULTS`, which `kubectl get` should show;
- `additionalProperties: false` is dropped (structural schemas refuse it; the apiserver prunes);
- apiVersion, kind and metadata leave the root schema (the apiserver supplies them);
- the object-level CEL rules that only the root can carry are added.

The output is deterministic so `make crds && git diff --exit-code crds/` can guard drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml
from kube_custom_resource.custom_resource import Scope
from kube_custom_resource.registry import (
    CustomResourceDefinition,
    CustomResourceDefinitionVersion,
)

from modelyard.api.types import Resource
from modelyard.api.v1alpha1 import CATEGORY, GROUP, KINDS, VERSION, RegistryType, root_rules

Schema = dict[str, Any]


def _collapse_optional(node: Schema) -> Schema:
    any_of = node.get("anyOf")
    if not isinstance(any_of, list):
        return node
    branches = [branch for branch in any_of if branch.get("type") != "null"]
    if len(branches) != len(any_of) and len(branches) == 1:
        merged = dict(branches[0])
        # The field's own keys (its description above all) win over the branch's.
        merged.update({key: value for key, value in node.items() if key != "anyOf"})
        return merged
    return node


def _tidy(node: Any) -> Any:
    """Recursively make a pydantic-derived schema node structural."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    if node.get("additionalProperties") is False:
        node = {key: value for key, value in node.items() if key != "additionalProperties"}
    # Kubernetes has no propertyNames; map keys are checked by the CEL rules on the map.
    node = {key: value for key, value in node.items() if key not in ("default", "propertyNames")}
    tidied: Schema = {}
    for key, value in node.items():
        if key in ("properties",):
            tidied[key] = {name: _tidy(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            tidied[key] = _tidy(value)
        else:
            tidied[key] = value
    return tidied


#: Defaults the API server applies too, by kind and path in the spec: those `kubectl get` shows
#: in a column. Every other default stays in pydantic, where the operator reads it.
SERVER_DEFAULTS: dict[str, dict[tuple[str, ...], Any]] = {
    "Registry": {("spec", "type"): RegistryType.OCI.value},
}


def _server_defaults(schema: Schema, kind: str) -> None:
    for path, value in SERVER_DEFAULTS.get(kind, {}).items():
        node = schema
        for part in path:
            node = node["properties"][part]
        node["default"] = value


AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _definition(kind: type[Resource]) -> CustomResourceDefinition:
    info = kind.info
    version = CustomResourceDefinitionVersion(
        name=VERSION,
        # kcr annotates `model` as an instance but only calls `model_json_schema()` on it, which
        # any of our Resource classes provides (it is a kcr BaseModel).
        model=cast(Any, kind),
        subresources={"status": {}},
        printer_columns=[*info.printer_columns, AGE_COLUMN],
        storage=True,
    )
    return CustomResourceDefinition(
        api_group=GROUP,
        kind=info.kind,
        singular_name=info.kind.lower(),
        plural_name=info.plural,
        scope=Scope.NAMESPACED,
        short_names=info.short_names,
        categories=[CATEGORY],
        versions={VERSION: version},
    )


def generate() -> list[dict[str, Any]]:
    """Every CRD of the API, as dicts ready to serialise."""
    crds = []
    for kind in KINDS:
        resource: dict[str, Any] = _definition(kind).kubernetes_resource()
        for version in resource["spec"]["versions"]:
            schema = _tidy(version["schema"]["openAPIV3Schema"])
            for implicit in ("apiVersion", "kind", "metadata"):
                schema["properties"].pop(implicit, None)
            schema["required"] = [
                r for r in schema.get("required", []) if r in schema["properties"]
            ]
            _server_defaults(schema, kind.info.kind)
            rules = root_rules(kind.info.kind)
            if rules:
                schema["x-kubernetes-validations"] = rules
            version["schema"]["openAPIV3Schema"] = schema
        resource["metadata"]["annotations"] = {
            "modelyard.dev/generated-by": "make crds (modelyard.api.crds) — do not edit"
        }
        crds.append(resource)
    return sorted(crds, key=lambda crd: str(crd["metadata"]["name"]))


def file_name(crd: dict[str, Any]) -> str:
    return f"{crd['metadata']['name']}.yaml"


def render(crd: dict[str, Any]) -> str:
    """YAML text of one CRD, stable across runs."""
    return yaml.safe_dump(crd, sort_keys=False, allow_unicode=True, width=100)


def write(directory: Path) -> list[Path]:
    """Write one file per kind into `directory`; stale files of the group are removed.

    `make crds` calls this for crds/ and for the Helm chart's copy, so both are byte-identical.
    """
    directory.mkdir(parents=True, exist_ok=True)
    crds = generate()
    wanted = {file_name(crd) for crd in crds}
    for stale in directory.glob(f"*.{GROUP}.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    written = []
    for crd in crds:
        path = directory / file_name(crd)
        path.write_text(render(crd), encoding="utf-8")
        written.append(path)
    return written

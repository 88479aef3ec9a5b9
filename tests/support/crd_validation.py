"""Offline stand-in for the apiserver's validation of custom resources.

What a real apiserver does on `kubectl apply` (with kubectl's default strict field validation),
and what this module reproduces so that bad manifests can be tested without a cluster:

1. the OpenAPI v3 schema of the CRD version (types, enums, bounds, required fields), with the
   Kubernetes extensions `x-kubernetes-int-or-string` and `x-kubernetes-preserve-unknown-fields`;
2. strict field validation: a field the schema does not know is an error, not silently pruned;
3. `x-kubernetes-list-type: map` key uniqueness;
4. every `x-kubernetes-validations` CEL rule, with `oldSelf` bound on updates (transition rules are
   skipped on create, as the apiserver does).

Known gap: the apiserver's CEL library adds functions (`isURL`, `quantity`, ...) that cel-python
lacks; the CRDs only use standard CEL, which `test_crds.py` checks by compiling every rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from jsonschema import validators

Schema = dict[str, Any]

_MISSING = object()


def _int_or_string(validator: Any, enabled: bool, instance: Any, schema: Schema) -> Iterator[Any]:
    if enabled and (isinstance(instance, bool) or not isinstance(instance, int | str)):
        yield jsonschema.ValidationError(f"{instance!r} must be an integer or a string")


KubernetesValidator = validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-int-or-string": _int_or_string}
)


@cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def compile_rule(rule: str) -> None:
    """Raise if `rule` is not valid standard CEL."""
    _program(rule)


def _cel_holds(rule: str, value: Any, old: Any) -> bool | str:
    activation = {"self": celpy.json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = _program(rule).evaluate(activation)
    except Exception as error:  # cel-python raises its own error types and KeyError
        return f"rule could not be evaluated: {error}"
    if isinstance(result, Exception):
        return f"rule could not be evaluated: {result}"
    return bool(result)


def _walk(schema: Schema, value: Any, old: Any, path: str, errors: list[str]) -> None:
    for entry in schema.get("x-kubernetes-validations", []):
        rule = entry["rule"]
        if "oldSelf" in rule and old is _MISSING:
            continue  # transition rules only apply to updates
        holds = _cel_holds(rule, value, old)
        if holds is not True:
            detail = entry.get("message", rule) if holds is False else holds
            errors.append(f"{path or '<root>'}: {detail}")
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else key
            old_child = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            if properties is not None and key in properties:
                _walk(properties[key], child, old_child, child_path, errors)
            elif isinstance(additional, dict):
                _walk(additional, child, old_child, child_path, errors)
            elif (
                properties is not None
                and not preserve
                and not (path == "" and key in ("apiVersion", "kind", "metadata"))
            ):
                errors.append(f'{child_path}: unknown field "{key}"')
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        keys = schema.get("x-kubernetes-list-map-keys")
        if schema.get("x-kubernetes-list-type") == "map" and keys:
            seen = set()
            for item in value:
                if isinstance(item, dict):
                    key = tuple(item.get(k) for k in keys)
                    if key in seen:
                        errors.append(
                            f"{path}: Duplicate value: {dict(zip(keys, key, strict=True))}"
                        )
                    seen.add(key)
        for index, item in enumerate(value):
            _walk(schema["items"], item, _MISSING, f"{path}[{index}]", errors)


class CrdValidator:
    """Validates manifests of the kinds defined by the CRD files in one directory."""

    def __init__(self, crd_directory: Path) -> None:
        self.schemas: dict[tuple[str, str], Schema] = {}
        for path in sorted(crd_directory.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            group = crd["spec"]["group"]
            for version in crd["spec"]["versions"]:
                api_version = f"{group}/{version['name']}"
                key = (api_version, crd["spec"]["names"]["kind"])
                self.schemas[key] = version["schema"]["openAPIV3Schema"]

    def knows(self, manifest: dict[str, Any]) -> bool:
        return (manifest.get("apiVersion"), manifest.get("kind")) in self.schemas

    def errors(self, manifest: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
        """Every reason the apiserver would refuse `manifest` (an update of `old` if given)."""
        schema = self.schemas[(manifest["apiVersion"], manifest["kind"])]
        found = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in KubernetesValidator(schema).iter_errors(manifest)
        ]
        _walk(schema, manifest, old if old is not None else _MISSING, "", found)
        return found


def iter_schema_nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every node of a schema, with a readable path, for structural checks."""
    yield path or "<root>", schema
    for name, child in schema.get("properties", {}).items():
        yield from iter_schema_nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from iter_schema_nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from iter_schema_nodes(schema["items"], f"{path}[]")
    for junctor in ("anyOf", "allOf", "oneOf"):
        for index, child in enumerate(schema.get(junctor, [])):
            yield from iter_schema_nodes(child, f"{path}<{junctor}{index}>")

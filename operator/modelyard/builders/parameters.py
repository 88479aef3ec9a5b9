"""A Model's parameters checked against its template's schema and turned into env vars.

Values arrive from YAML, often through GitOps templating that quotes everything, so a value is
accepted when it *means* the declared type: `"64"` for an int, `"true"` for a bool. Anything
else is a problem reported by name, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from modelyard.api.v1alpha1 import Parameter, ParameterType

SECRET_REFERENCE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)/([-._a-zA-Z0-9]+)$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")

EnvVar = dict[str, Any]


@dataclass
class ResolvedParameters:
    """The env vars the parameters become, or every reason they cannot."""

    env: list[EnvVar] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    secret_names: list[str] = field(default_factory=list)


def _as_text(parameter: Parameter, value: Any) -> str | None:
    """The env var text for `value`, or None when it does not mean the declared type."""
    kind = parameter.type
    if kind is ParameterType.BOOL:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower()
        return None
    if isinstance(value, bool):
        # YAML turns an unquoted `true` into a bool; as text it is still what the user wrote.
        return ("true" if value else "false") if kind is ParameterType.STR else None
    if kind is ParameterType.INT:
        if isinstance(value, int) or (isinstance(value, str) and _INT.match(value)):
            return str(int(value))
        return None
    if kind is ParameterType.FLOAT:
        if isinstance(value, int | float) or (isinstance(value, str) and _FLOAT.match(value)):
            return str(value)
        return None
    if kind is ParameterType.STR:
        return value if isinstance(value, str) else str(value)
    return None


def resolve(
    template_name: str, schema: list[Parameter], values: dict[str, Any]
) -> ResolvedParameters:
    """Check `values` against `schema` and build the env vars, in the template's order."""
    result = ResolvedParameters()
    known = {parameter.name for parameter in schema}
    for unknown in sorted(set(values) - known):
        accepted = ", ".join(sorted(known)) or "none"
        result.problems.append(
            f"unknown parameter {unknown}: template {template_name} accepts {accepted}"
        )
    for parameter in schema:
        value = values.get(parameter.name, parameter.default)
        if value is None:
            if parameter.required:
                result.problems.append(
                    f"missing required parameter {parameter.name} of template {template_name}"
                    + (f" ({parameter.description})" if parameter.description else "")
                )
            continue
        if parameter.type is ParameterType.SECRET:
            match = SECRET_REFERENCE.match(value) if isinstance(value, str) else None
            if match is None:
                # The value is never echoed: a user may have pasted the secret itself.
                result.problems.append(
                    f"parameter {parameter.name} is a secret: its value must name a Secret "
                    "key as 'secret-name/key'"
                )
                continue
            secret, key = match.group(1), match.group(3)
            result.secret_names.append(secret)
            result.env.append(
                {
                    "name": parameter.name,
                    "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
                }
            )
            continue
        text = _as_text(parameter, value)
        if text is None:
            result.problems.append(
                f"parameter {parameter.name} must be {parameter.type.value}, "
                f"not {type(value).__name__} {value!r}"[:300]
            )
            continue
        result.env.append({"name": parameter.name, "value": text})
    return result

"""A Model's parameters against its template's typed schema."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.api.v1alpha1 import Parameter, ParameterType
from modelyard.builders.parameters import resolve

SCHEMA = [
    Parameter(name="MODEL_PATH", type=ParameterType.STR, required=True, description="S3 path"),
    Parameter(name="BATCH", type=ParameterType.INT, default=32),
    Parameter(name="TEMPERATURE", type=ParameterType.FLOAT),
    Parameter(name="NORMALIZE", type=ParameterType.BOOL),
    Parameter(name="TOKEN", type=ParameterType.SECRET),
]

GOOD = [
    ({"MODEL_PATH": "a/b"}, {"MODEL_PATH": "a/b", "BATCH": "32"}),
    ({"MODEL_PATH": "a", "BATCH": 64}, {"MODEL_PATH": "a", "BATCH": "64"}),
    ({"MODEL_PATH": "a", "BATCH": "64"}, {"MODEL_PATH": "a", "BATCH": "64"}),
    (
        {"MODEL_PATH": "a", "TEMPERATURE": 0.7},
        {"MODEL_PATH": "a", "BATCH": "32", "TEMPERATURE": "0.7"},
    ),
    ({"MODEL_PATH": "a", "TEMPERATURE": 1}, {"MODEL_PATH": "a", "BATCH": "32", "TEMPERATURE": "1"}),
    (
        {"MODEL_PATH": "a", "NORMALIZE": True},
        {"MODEL_PATH": "a", "BATCH": "32", "NORMALIZE": "true"},
    ),
    (
        {"MODEL_PATH": "a", "NORMALIZE": "False"},
        {"MODEL_PATH": "a", "BATCH": "32", "NORMALIZE": "false"},
    ),
    ({"MODEL_PATH": 2024}, {"MODEL_PATH": "2024", "BATCH": "32"}),
]


@pytest.mark.parametrize(("values", "env"), GOOD)
def test_values_that_mean_the_declared_type_are_accepted(
    values: dict[str, Any], env: dict[str, str]
) -> None:
    result = resolve("t", SCHEMA, values)
    assert result.problems == []
    assert {item["name"]: item["value"] for item in result.env} == env


BAD = [
    ({}, "missing required parameter MODEL_PATH of template t (S3 path)"),
    (
        {"MODEL_PATH": "a", "EXTRA": 1},
        "unknown parameter EXTRA: template t accepts BATCH, MODEL_PATH",
    ),
    ({"MODEL_PATH": "a", "BATCH": "many"}, "parameter BATCH must be int, not str 'many'"),
    ({"MODEL_PATH": "a", "BATCH": True}, "parameter BATCH must be int, not bool True"),
    ({"MODEL_PATH": "a", "BATCH": 1.5}, "parameter BATCH must be int, not float 1.5"),
    ({"MODEL_PATH": "a", "TEMPERATURE": "hot"}, "parameter TEMPERATURE must be float"),
    ({"MODEL_PATH": "a", "NORMALIZE": "yes"}, "parameter NORMALIZE must be bool"),
    ({"MODEL_PATH": "a", "TOKEN": "no-key"}, "parameter TOKEN is a secret"),
]


@pytest.mark.parametrize(("values", "problem"), BAD)
def test_each_problem_names_the_parameter(values: dict[str, Any], problem: str) -> None:
    problems = resolve("t", SCHEMA, values).problems
    assert any(p.startswith(problem) for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    problems = resolve("t", SCHEMA, {"BATCH": "x", "EXTRA": 1}).problems
    assert len(problems) == 3


def test_secret_parameter_becomes_a_secret_key_ref() -> None:
    result = resolve("t", SCHEMA, {"MODEL_PATH": "a", "TOKEN": "hf-token/token"})
    assert {
        "name": "TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    } in result.env
    assert result.secret_names == ["hf-token"]


def test_a_pasted_secret_value_is_never_echoed() -> None:
    leaked = "hf_SuperSecretTokenValue123"
    problems = resolve("t", SCHEMA, {"MODEL_PATH": "a", "TOKEN": leaked}).problems
    assert problems and all(leaked not in p for p in problems)


def test_a_zero_default_keeps_its_type() -> None:
    """0 and 1 are numbers, not booleans: a float parameter defaulting to 0 is valid."""
    schema = [Parameter.model_validate({"name": "DELAY", "type": "float", "default": 0})]
    assert resolve("t", schema, {}).env == [{"name": "DELAY", "value": "0"}]
    flag = [Parameter.model_validate({"name": "ON", "type": "bool", "default": 1})]
    assert resolve("t", flag, {}).problems == ["parameter ON must be bool, not int 1"]

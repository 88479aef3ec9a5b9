"""The request and response contracts of the six model types, and the two commands that show
and apply them: `modelyard schemas` and `modelyard validate-request`, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from modelyard.api import contracts
from modelyard.api.v1alpha1 import ModelType
from support.examples import EXAMPLES

#: The seed's tables (GenAI platform guide, "Model Types and Schemas"), field for field.
SEED_FIELDS = {
    "EMBEDDING": (["texts"], ["embeddings"]),
    "RERANKING": (["query", "chunks"], ["chunk_scores"]),
    "COMPLETION": (
        ["temperature", "stop_sequences", "max_tokens", "prompts"],
        ["completions", "finish_reason"],
    ),
    "CHAT_COMPLETION": (
        ["temperature", "stop_sequences", "max_tokens", "messages"],
        ["message", "finish_reason"],
    ),
    "AGENT": (["memory_strategy", "tools", "messages", "instructions"], ["action", "context"]),
    # The annotation tool's "bring your own model" (seed 001): POST /api/infer.
    "IMAGE_CLASSIFICATION": (["image"], ["status", "results"]),
}

GOOD_REQUESTS: dict[str, dict[str, Any]] = {
    "EMBEDDING": {"texts": ["a cat", "a dog"]},
    "RERANKING": {"query": "largest continent?", "chunks": ["Asia.", "Ibiza."]},
    "COMPLETION": {"prompts": ["Once upon"], "temperature": 0.0, "stop_sequences": ["."]},
    "CHAT_COMPLETION": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "max_tokens": 16,
    },
    "AGENT": {
        "memory_strategy": {"name": "last_k", "params": {"k": 5}},
        "tools": [
            {
                "name": "search",
                "description": "Search the docs",
                "arguments": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ],
        "messages": [{"role": "user", "content": "Find the refund policy"}],
        "instructions": "Use search before answering.",
    },
    "IMAGE_CLASSIFICATION": {"image": {"url": "https://example.com/cat.jpg"}},
}

GOOD_ANSWERS: dict[str, dict[str, Any]] = {
    "EMBEDDING": {"embeddings": [["a cat", [0.1, 0.2]], ["a dog", [0.3, 0.4]]]},
    "RERANKING": {"chunk_scores": [0.9, 0.1], "tokens_used": 12},
    "COMPLETION": {"completions": [["Once upon", [" a time"]]], "finish_reason": "stop"},
    "CHAT_COMPLETION": {"message": {"role": "assistant", "content": "Hello"}},
    "AGENT": {
        "action": "tool_request",
        "context": {"tool_request": {"name": "search", "arguments": "{}"}},
    },
    "IMAGE_CLASSIFICATION": {
        "status": "succeeded",
        "results": [{"name": "object-1", "label": "cat", "confidence": 0.93, "tag": {"x": 1}}],
        "model_version": "3",
    },
}


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelyard", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        input=stdin,
    )


def test_every_model_type_but_custom_has_a_contract() -> None:
    assert set(contracts.CONTRACTS) | {"CUSTOM"} == {t.value for t in ModelType}


@pytest.mark.parametrize("model_type", sorted(SEED_FIELDS))
def test_schemas_carry_the_seeds_fields(model_type: str) -> None:
    request_fields, response_fields = SEED_FIELDS[model_type]
    schemas = contracts.json_schemas(model_type)
    assert list(schemas["request"]["properties"]) == request_fields
    assert set(response_fields) <= set(schemas["response"]["properties"])


@pytest.mark.parametrize("model_type", sorted(GOOD_REQUESTS))
def test_good_requests_and_answers_pass_pydantic_and_the_printed_json_schema(
    model_type: str,
) -> None:
    """The JSON Schema users get from `modelyard schemas -o json` agrees with the operator's
    own check, judged by an independent validator."""
    schemas = contracts.json_schemas(model_type)
    request, answer = GOOD_REQUESTS[model_type], GOOD_ANSWERS[model_type]
    assert contracts.check_request(model_type, request) == []
    assert contracts.check_answer(model_type, request, answer) == []
    jsonschema.validate(request, schemas["request"])
    jsonschema.validate(answer, schemas["response"])
    broken = {k: v for k, v in request.items() if k != SEED_FIELDS[model_type][0][-1]}
    if contracts.check_request(model_type, broken):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schemas["request"])


def test_problems_name_each_wrong_field() -> None:
    found = contracts.check_request(
        "CHAT_COMPLETION",
        {
            "messages": [{"role": "user"}, {"role": "robot", "content": "x"}],
            "temperature": 1.5,
            "stop": ["."],
        },
    )
    assert "temperature: Input should be less than or equal to 1" in found
    assert "messages[0].content: required field is missing" in found
    assert any(p.startswith("messages[1]") and "robot" in p for p in found), found
    assert "stop: unknown field" in found
    # Strict, as on the wire: a number in a string is not a number.
    assert contracts.check_request("COMPLETION", {"prompts": ["a"], "temperature": "0.5"})


def test_an_answer_must_score_every_input() -> None:
    request = GOOD_REQUESTS["RERANKING"]
    assert contracts.check_answer("RERANKING", request, {"chunk_scores": [0.5]}) == [
        "chunk_scores: 1 items for 2 chunks (one per input, in order)"
    ]
    assert contracts.check_answer("RERANKING", request, {"scores": [0.1, 0.2]}) == [
        "chunk_scores: required field is missing"
    ]
    assert contracts.check_answer("EMBEDDING", {"texts": ["a"]}, {"embeddings": [["a", ["x"]]]})
    assert contracts.check_answer("CUSTOM", {"image": {}}, {"anything": True}) == []
    assert contracts.check_answer("CUSTOM", {"image": {}}, ["not", "an", "object"])


def test_schemas_command_prints_the_seeds_reranking_fields() -> None:
    result = run("schemas", "RERANKING")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("RERANKING request (RerankingRequest)")
    assert any(line.split()[:2] == ["query", "str"] for line in lines)
    assert any(line.split()[:2] == ["chunks", "List[str]"] for line in lines)
    assert any(line.split()[:2] == ["chunk_scores", "List[float]"] for line in lines)
    assert "Query to rerank chunks against in order of relevance." in result.stdout

    as_json = run("schemas", "reranking", "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    schema = json.loads(as_json.stdout)
    assert schema["request"]["required"] == ["query", "chunks"]
    assert schema["response"]["required"] == ["chunk_scores"]

    every = json.loads(run("schemas", "-o", "json").stdout)
    assert set(every) == {t.value for t in ModelType}

    unknown = run("schemas", "TRANSLATION")
    assert unknown.returncode == 2
    assert "unknown model type 'TRANSLATION'" in unknown.stderr and "RERANKING" in unknown.stderr


def test_validate_request_refuses_a_reranking_request_without_chunks(tmp_path: Path) -> None:
    request = tmp_path / "model-request.json"
    request.write_text(json.dumps({"query": "What's the name of the largest continent?"}))
    result = run("validate-request", "RERANKING", str(request))
    assert result.returncode == 1
    assert f"error: {request}: chunks: required field is missing" in result.stderr
    assert "Traceback" not in result.stderr

    request.write_text(json.dumps(GOOD_REQUESTS["RERANKING"]))
    result = run("validate-request", "RERANKING", str(request))
    assert result.returncode == 0, result.stderr
    assert "a valid RERANKING request" in result.stdout


def test_validate_request_takes_the_type_from_manifests(tmp_path: Path) -> None:
    """`-f model.yaml`: the Model's template (from the same files) says the type."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"texts": ["hello"]}))
    reranker = [
        "-f",
        str(EXAMPLES / "03-reranker-template.yaml"),
        "-f",
        str(EXAMPLES / "04-reranker-model.yaml"),
    ]
    result = run("validate-request", *reranker, str(request))
    assert result.returncode == 1
    assert "chunks: required field is missing" in result.stderr
    assert "texts: unknown field" in result.stderr
    assert "Model my-reranking-model" in result.stderr

    # An external Model names its own type; several Models need --model.
    several = run("validate-request", "-f", str(EXAMPLES), str(request))
    assert several.returncode == 2 and "--model" in several.stderr
    external = run(
        "validate-request",
        "-f",
        str(EXAMPLES),
        "--model",
        "hosted-reranker",
        "-",
        stdin=json.dumps(GOOD_REQUESTS["RERANKING"]),
    )
    assert external.returncode == 0, external.stderr

    # The Model alone: its template is not in the files, and the message says so.
    alone = run("validate-request", "-f", str(EXAMPLES / "04-reranker-model.yaml"), str(request))
    assert alone.returncode == 2
    assert "custom-reranking-model-template, which is not in the files" in alone.stderr


def test_validate_request_reports_unreadable_input(tmp_path: Path) -> None:
    missing = run("validate-request", "RERANKING", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{query: ")
    result = run("validate-request", "RERANKING", str(garbage))
    assert result.returncode == 1 and "not JSON" in result.stderr
    assert "Traceback" not in result.stderr + missing.stderr


def test_every_example_probe_is_a_valid_request_of_its_type() -> None:
    """The probes shipped in examples/ would pass `validate-request` (and the operator's own
    check, which refuses a template whose probe does not)."""
    import yaml  # noqa: PLC0415

    from modelyard.api.protocols import request_problems  # noqa: PLC0415

    probes = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            spec = (document or {}).get("spec") or {}
            holder = spec.get("external") or spec
            if "probe" in holder:
                probes.append((holder["modelType"], holder["probe"]))
    assert {model_type for model_type, _ in probes} >= {"RERANKING", "IMAGE_CLASSIFICATION"}
    protocols_shown = set()
    for model_type, probe in probes:
        protocol = probe.get("protocol", "Modelyard")
        protocols_shown.add(protocol)
        if protocol == "Modelyard":
            assert contracts.check_request(model_type, probe["request"]) == [], probe
        else:  # a serving runtime's own protocol: its rules, not the type's
            request_problems(protocol, probe.get("model"), probe.get("path"), probe["request"])
    assert protocols_shown == {"Modelyard", "MLflow", "DEEPaaS", "OpenInference"}


def test_an_image_classifiers_request_names_exactly_one_image_that_decodes() -> None:
    check = contracts.check_request
    assert check("IMAGE_CLASSIFICATION", {"image": {"base64": "iVBORw0KGgo="}}) == []
    assert check("IMAGE_CLASSIFICATION", {"image": {}}) == [
        "image: Value error, give exactly one of url and base64"
    ]
    both = {"image": {"url": "https://example.com/a.jpg", "base64": "iVBORw0KGgo="}}
    assert check("IMAGE_CLASSIFICATION", both) == [
        "image: Value error, give exactly one of url and base64"
    ]
    (found,) = check("IMAGE_CLASSIFICATION", {"image": {"base64": "not base64!"}})
    assert found.startswith("image.base64:") and "not valid base64" in found


def test_an_image_classifiers_answer_is_judged_by_status_confidence_and_classes() -> None:
    kind = "IMAGE_CLASSIFICATION"
    failed = {"status": "failed", "results": [], "message": "cannot fetch the URL"}
    assert contracts.check_response(kind, failed) == []
    assert contracts.inference_failure(kind, failed) == "cannot fetch the URL"
    assert contracts.inference_failure(kind, {**failed, "message": ""}) == (
        "the server answered status: failed"
    )
    assert contracts.inference_failure(kind, GOOD_ANSWERS[kind]) is None
    unsure = {"status": "succeeded", "results": [{"name": "a", "label": "cat", "confidence": 2}]}
    assert contracts.check_response(kind, unsure) == [
        "results[0].confidence: Input should be less than or equal to 1"
    ]
    assert contracts.check_response(kind, {"status": "done", "results": []})
    answer = {
        "status": "succeeded",
        "results": [
            {"name": "a", "label": "cat", "confidence": 0.9},
            {"name": "b", "label": "zebra", "confidence": 0.4},
        ],
    }
    assert contracts.unknown_labels(kind, answer, ["cat", "dog"]) == ["zebra"]
    assert contracts.unknown_labels(kind, answer, []) == []


def test_validate_request_refuses_bad_base64(tmp_path: Path) -> None:
    request = tmp_path / "image-request.json"
    request.write_text(json.dumps({"image": {"base64": "%%% not an image %%%"}}))
    result = run("validate-request", "IMAGE_CLASSIFICATION", str(request))
    assert result.returncode == 1, result
    assert "image.base64: Value error, not valid base64" in result.stderr
    assert "Traceback" not in result.stderr

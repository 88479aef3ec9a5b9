"""Asking a serving runtime in its own protocol: what to fetch before the sample request, where
to send it, and the verdict — judged by `modelyard.api.protocols` (pure) on what came back.

Each asker returns the Conformant check and what the server said of the model (recorded in
the Model's status as `status.server`); none raises for an answer it does not like: a wrong
answer is a verdict, shown to the user with the field that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from modelyard.api import protocols
from modelyard.reconcile.conformance.targets import Target
from modelyard.registry.endpoint import Answer, ModelEndpoint
from modelyard.status import reasons
from modelyard.status.conditions import Check, failed, passed

Metadata = dict[str, Any] | None
Asker = Callable[[ModelEndpoint, Target], Awaitable[tuple[Check, Metadata]]]


def refused(method: str, url: str, answer: Answer) -> Check | None:
    """The answer's status as a verdict: None when it is a success."""
    if answer.status in (401, 403):
        return failed(
            reasons.UNAUTHORIZED,
            f"{method} {url} answered {answer.status}: the server refused the credentials",
        )
    if not 200 <= answer.status < 300:
        return failed(reasons.ENDPOINT_ERROR, f"{method} {url} answered HTTP {answer.status}")
    return None


def _not_json(method: str, url: str, answer: Answer) -> Check | None:
    if answer.not_json is None:
        return None
    return failed(
        reasons.SCHEMA_MISMATCH, f"{method} {url}: the answer is not JSON ({answer.not_json})"
    )


def _mismatch(method: str, url: str, protocol: str, problems: list[str]) -> Check:
    return failed(
        reasons.SCHEMA_MISMATCH,
        f"{method} {url}: the answer breaks the {protocol} protocol: " + "; ".join(problems),
    )


async def ask_mlflow(client: ModelEndpoint, target: Target) -> tuple[Check, Metadata]:
    """MLflow's scoring server: the sample POSTed to /invocations; one prediction per row.
    A sample that cannot match the model's signature is not sent: the template is wrong."""
    assert target.probe_path is not None and target.probe_request is not None
    request = json.loads(target.probe_request)
    url = client.url(target.probe_path)
    unmatched = protocols.mlflow_signature_problems(request, target.mlflow_inputs)
    if unmatched:
        return failed(
            reasons.PROBE_REFUSED,
            "the template's probe.request cannot match the model's signature, which requires "
            f"{', '.join(target.mlflow_inputs)}: {'; '.join(unmatched)}. The sample is wrong, "
            f"not the server; POST {url} was not sent",
        ), None
    answer = await client.post(target.probe_path, request)
    if (
        answer.status == 400
        and isinstance(answer.body, dict)
        and answer.body.get("error_code")
        in (
            "INVALID_PARAMETER_VALUE",
            "BAD_REQUEST",
        )
    ):
        # MLflow's own verdict on the input (SCHEMA_ENFORCEMENT_FAILED, BAD_REQUEST): the
        # model's signature refuses the template's sample.
        code = answer.body.get("error_code", "BAD_REQUEST")
        message = str(answer.body.get("message", ""))[:500]
        return failed(
            reasons.PROBE_REFUSED,
            f"POST {url}: the model refuses the probe's request ({code}): {message}",
        ), None
    problem = refused("POST", url, answer) or _not_json("POST", url, answer)
    if problem is not None:
        return problem, None
    found = protocols.mlflow_answer_problems(request, answer.body)
    if found:
        return _mismatch("POST", url, protocols.MLFLOW, found), None
    rows = protocols.mlflow_rows(request)
    return passed(
        reasons.CONFORMANT, f"POST {url} answered {rows} predictions for {rows} rows"
    ), None


async def ask_deepaas(client: ModelEndpoint, target: Target) -> tuple[Check, Metadata]:
    """DEEPaaS: the model must be listed (its metadata recorded), its predict arguments POSTed
    as a form, and the answer must match the response schema the server publishes."""
    assert target.probe_request is not None
    listing_url = client.url("/v2/models/")
    listing = await client.get("/v2/models/")
    problem = refused("GET", listing_url, listing) or _not_json("GET", listing_url, listing)
    if problem is not None:
        return problem, None
    entry = protocols.deepaas_model(listing.body, target.model)
    if entry is None:
        wanted = f"model {target.model}" if target.model else "any model"
        return failed(reasons.MODEL_NOT_LISTED, f"GET {listing_url} does not list {wanted}"), None
    model = protocols.deepaas_route(entry)
    metadata: dict[str, Any] = protocols.deepaas_metadata(entry)
    path = f"/v2/models/{model}/predict/"
    url = client.url(path)
    answer = await client.post_form(path, json.loads(target.probe_request))
    problem = refused("POST", url, answer) or _not_json("POST", url, answer)
    if problem is not None:
        return problem, metadata
    openapi_url = client.url("/swagger.json")
    openapi = await client.get("/swagger.json")
    schema = (
        protocols.predict_response_schema(openapi.body, model)
        if refused("GET", openapi_url, openapi) is None
        else None
    )
    if schema is None:
        return failed(
            reasons.SCHEMA_MISMATCH,
            f"GET {openapi_url}: the server publishes no response schema for POST {path}",
        ), metadata
    found = protocols.schema_problems(schema, answer.body)
    if found:
        return _mismatch("POST", url, protocols.DEEPAAS, found), metadata
    return passed(
        reasons.CONFORMANT, f"POST {url} answered as {model}'s published schema says"
    ), metadata


async def ask_open_inference(client: ModelEndpoint, target: Target) -> tuple[Check, Metadata]:
    """The Open Inference Protocol: server and model ready, the model's metadata recorded, and
    the inference judged against it."""
    assert target.probe_request is not None and target.model is not None
    model = target.model
    for path in ("/v2/health/ready", f"/v2/models/{model}/ready"):
        answer = await client.get(path)
        problem = refused("GET", client.url(path), answer)
        if problem is not None and problem.reason == reasons.UNAUTHORIZED:
            return problem, None
        if problem is not None:
            return failed(
                reasons.MODEL_NOT_READY, f"GET {client.url(path)} answered HTTP {answer.status}"
            ), None
    metadata_path = f"/v2/models/{model}"
    metadata_url = client.url(metadata_path)
    described = await client.get(metadata_path)
    problem = refused("GET", metadata_url, described) or _not_json("GET", metadata_url, described)
    if problem is not None:
        return problem, None
    found = protocols.metadata_problems(described.body, model)
    if found:
        return _mismatch("GET", metadata_url, protocols.OPEN_INFERENCE, found), None
    metadata = dict(described.body)
    said = protocols.recorded(metadata, protocols.INFERENCE_METADATA)
    request = json.loads(target.probe_request)
    path = f"/v2/models/{model}/infer"
    url = client.url(path)
    answer = await client.post(path, request)
    problem = refused("POST", url, answer) or _not_json("POST", url, answer)
    if problem is not None:
        return problem, said
    found = protocols.inference_answer_problems(request, metadata, answer.body)
    if found:
        return _mismatch("POST", url, protocols.OPEN_INFERENCE, found), said
    outputs = ", ".join(str(t.get("name")) for t in answer.body.get("outputs") or [])
    return passed(
        reasons.CONFORMANT, f"POST {url} answered {outputs} as the model declares them"
    ), said


ASKERS: dict[str, Asker] = {
    protocols.MLFLOW: ask_mlflow,
    protocols.DEEPAAS: ask_deepaas,
    protocols.OPEN_INFERENCE: ask_open_inference,
}

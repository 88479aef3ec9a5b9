"""The serving runtimes' own protocols, as the probe speaks them: what a sample request must be,
and what makes an answer right.

Beside the model types' contracts (`modelyard.api.contracts`, the seed-002 schemas that modelyard
defines), a template may declare that its image serves a protocol someone else defined: MLflow's
scoring server, DEEPaaS, or the Open Inference Protocol (KServe v2: MLServer, Triton, KServe's
own). The judgement is the protocol's, not ours: the rows MLflow promises, the response schema a
DEEPaaS model publishes, the outputs an Open Inference model declares. Pure: the prober fetches,
this decides, so every rule is tested without a server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

MODELYARD = "Modelyard"
MLFLOW = "MLflow"
DEEPAAS = "DEEPaaS"
OPEN_INFERENCE = "OpenInference"

#: MLflow's scoring server takes exactly one of these (its `/invocations` JSON formats).
MLFLOW_INPUTS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: The Open Inference Protocol's tensor datatypes.
DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }
)
#: Request fields of the protocols' requests, declared in the CRD's structural schema so `kubectl
#: explain` shows them; what is inside is open, and judged by `request_problems`. (MLflow's
#: columnar `inputs`, an object of columns, is not taken: the Open Inference Protocol's `inputs`
#: is a list, and one field has one type. MLflow takes the same rows as `dataframe_split`.)
_ROWS = {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}}
REQUEST_FIELDS: dict[str, dict[str, Any]] = {
    "dataframe_split": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "MLflow: {columns: [...], data: [[...], ...]}, pandas' split orient.",
    },
    "dataframe_records": {
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "description": "MLflow: one object per row.",
    },
    "instances": {**_ROWS, "description": "MLflow: a list of rows (TensorFlow Serving's)."},
    "inputs": {
        **_ROWS,
        "description": "MLflow: a list of rows. Open Inference Protocol: the input tensors, "
        "[{name, shape, datatype, data}].",
    },
}


def request_problems(
    protocol: str, model: str | None, path: str | None, request: Mapping[str, Any]
) -> None:
    """Raise ValueError when `request` cannot be a request of `protocol` (the template's error,
    said when it is applied, not the server's when it answers)."""
    if protocol == MLFLOW:
        given = [name for name in MLFLOW_INPUTS if name in request]
        if len(given) != 1:
            raise ValueError(
                "an MLflow probe's request has exactly one of "
                + ", ".join(MLFLOW_INPUTS)
                + (f" (it has {', '.join(given)})" if given else "")
            )
        if mlflow_rows(request) is None:
            raise ValueError(
                f"the MLflow probe's {given[0]} is not a table of rows MLflow reads "
                "(dataframe_split: {columns, data}; dataframe_records, instances, inputs: a list)"
            )
    elif protocol == OPEN_INFERENCE:
        if not model:
            raise ValueError("an OpenInference probe names its model (probe.model)")
        problems = inference_request_problems(request)
        if problems:
            raise ValueError("the OpenInference probe's request: " + "; ".join(problems))
    elif protocol == DEEPAAS:
        # Form fields: each a value (a null would be sent as the text "null").
        unsent = [k for k, v in request.items() if v is None or isinstance(v, (dict, list))]
        if unsent:
            raise ValueError(
                "a DEEPaaS probe's request holds its predict arguments, each a value: "
                + ", ".join(unsent)
                + " is not"
            )
    if protocol in (DEEPAAS, OPEN_INFERENCE) and path:
        raise ValueError(f"path is {protocol}'s own: leave it out")


# -- MLflow ----------------------------------------------------------------------------------


def mlflow_rows(request: Mapping[str, Any]) -> int | None:
    """How many rows the request sends, as MLflow's scoring server counts them (None: not a
    shape it reads)."""
    if "dataframe_split" in request:
        split = request["dataframe_split"]
        data = split.get("data") if isinstance(split, Mapping) else None
        return len(data) if isinstance(data, list) else None
    for name in ("dataframe_records", "instances"):
        if name in request:
            rows = request[name]
            return len(rows) if isinstance(rows, list) else None
    if "inputs" in request:
        inputs = request["inputs"]
        return len(inputs) if isinstance(inputs, list) else None
    return None


def mlflow_signature_problems(request: Mapping[str, Any], inputs: Sequence[str]) -> list[str]:
    """Where the sample cannot match the model's signature (`inputs`: the columns it
    requires), as MLflow's schema enforcement judges it: a dataframe_split whose columns, or a
    dataframe_records row whose keys, lack a required column. Columns the signature lacks are
    no problem (MLflow ignores them); instances and inputs are read by rules of their own, and
    left to the server."""
    if not inputs:
        return []
    if "dataframe_split" in request:
        split = request["dataframe_split"]
        columns = split.get("columns") if isinstance(split, Mapping) else None
        if not isinstance(columns, list):
            return [
                "dataframe_split names no columns; the model's signature requires "
                + ", ".join(inputs)
            ]
        missing = [name for name in inputs if name not in columns]
        return [f"dataframe_split.columns lacks {', '.join(missing)}"] if missing else []
    problems: list[str] = []
    rows = request.get("dataframe_records")
    for index, row in enumerate(rows if isinstance(rows, list) else []):
        missing = [name for name in inputs if not isinstance(row, Mapping) or name not in row]
        if missing:
            problems.append(f"dataframe_records[{index}] lacks {', '.join(missing)}")
    return problems[:10]


def mlflow_answer_problems(request: Mapping[str, Any], answer: Any) -> list[str]:
    """MLflow's promise: `predictions`, one per input row."""
    if not isinstance(answer, Mapping) or "predictions" not in answer:
        return ["predictions: missing (MLflow's scoring server answers {predictions: ...})"]
    predictions = answer["predictions"]
    rows = mlflow_rows(request)
    if isinstance(predictions, Mapping):
        # A model with several outputs answers one column per output, each with the rows.
        columns = {k: v for k, v in predictions.items() if isinstance(v, list)}
        counts = {k: len(v) for k, v in columns.items()}
        wrong = [f"{k} has {n}" for k, n in counts.items() if n != rows]
        if not columns or wrong:
            return [f"predictions: {', '.join(wrong) or 'no column'}, for {rows} input rows"]
        return []
    if not isinstance(predictions, list):
        return ["predictions: not a list of rows"]
    if len(predictions) != rows:
        return [f"predictions: {len(predictions)} rows for {rows} input rows"]
    return []


# -- Open Inference Protocol -----------------------------------------------------------------


def inference_request_problems(request: Mapping[str, Any]) -> list[str]:
    """A v2 inference request: inputs, each a named tensor with a shape its data fills."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return ["inputs: a non-empty list of tensors"]
    problems: list[str] = []
    for index, tensor in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(tensor, Mapping):
            problems.append(f"{where}: not an object")
            continue
        problems.extend(_tensor_problems(where, tensor))
    return problems


def _tensor_problems(where: str, tensor: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if not isinstance(tensor.get("name"), str) or not tensor.get("name"):
        problems.append(f"{where}.name: missing")
    if tensor.get("datatype") not in DATATYPES:
        problems.append(f"{where}.datatype: {tensor.get('datatype')!r} is not a v2 datatype")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        problems.append(f"{where}.shape: not a list of sizes")
        return problems
    count = _elements(tensor.get("data"))
    if count is None:
        problems.append(f"{where}.data: missing")
    elif count != math.prod(shape):
        problems.append(f"{where}.data: {count} values for shape {shape}")
    return problems


def _elements(data: Any) -> int | None:
    """The values of a tensor's data, flat or nested (both are allowed by the protocol)."""
    if not isinstance(data, list):
        return None
    count = 0
    for item in data:
        count += _elements(item) or 0 if isinstance(item, list) else 1
    return count


def batch_of(request: Mapping[str, Any]) -> int | None:
    """The batch the request sends: the first dimension its inputs share."""
    sizes = {
        tensor["shape"][0]
        for tensor in request.get("inputs") or []
        if isinstance(tensor, Mapping) and isinstance(tensor.get("shape"), list) and tensor["shape"]
    }
    return sizes.pop() if len(sizes) == 1 else None


def metadata_problems(metadata: Any, model: str) -> list[str]:
    """GET /v2/models/{model}: a name, and inputs and outputs as tensor metadata."""
    if not isinstance(metadata, Mapping):
        return ["the model's metadata is not a JSON object"]
    problems = []
    if metadata.get("name") != model:
        problems.append(f"name: {metadata.get('name')!r}, not {model!r}")
    for side in ("inputs", "outputs"):
        for index, tensor in enumerate(metadata.get(side) or []):
            if not isinstance(tensor, Mapping) or not isinstance(tensor.get("name"), str):
                problems.append(f"{side}[{index}]: not tensor metadata")
            elif tensor.get("datatype") not in DATATYPES:
                problems.append(f"{side}[{index}].datatype: {tensor.get('datatype')!r}")
    return problems


def inference_answer_problems(
    request: Mapping[str, Any], metadata: Mapping[str, Any], answer: Any
) -> list[str]:
    """Every declared output, with its datatype and a shape that fits the declared one and
    whose first dimension is the request's batch; every output's data filling its shape."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("outputs"), list):
        return ["outputs: missing"]
    outputs = {
        tensor.get("name"): tensor for tensor in answer["outputs"] if isinstance(tensor, Mapping)
    }
    problems: list[str] = []
    # A request may name the outputs it wants (the protocol's `outputs`): only those come back.
    asked = {t.get("name") for t in request.get("outputs") or [] if isinstance(t, Mapping)}
    declared = [
        t
        for t in metadata.get("outputs") or []
        if isinstance(t, Mapping) and (not asked or t.get("name") in asked)
    ]
    for tensor in declared:
        name = tensor.get("name")
        found = outputs.get(name)
        if found is None:
            problems.append(f"outputs.{name}: declared by the model, missing from the answer")
            continue
        if found.get("datatype") != tensor.get("datatype"):
            problems.append(
                f"outputs.{name}.datatype: {found.get('datatype')!r}, declared "
                f"{tensor.get('datatype')!r}"
            )
        expected = tensor.get("shape")
        shape = found.get("shape")
        if isinstance(expected, list) and isinstance(shape, list):
            fits = len(expected) == len(shape) and all(
                e in (-1, s) for e, s in zip(expected, shape, strict=True)
            )
            if not fits:
                problems.append(f"outputs.{name}.shape: {shape}, declared {expected}")
    batch = batch_of(request)
    # Only an output declared with a batch dimension (-1 first) answers one row per input row:
    # a model without batching (Triton's max_batch_size 0) declares its shapes whole.
    batched = {
        t.get("name")
        for t in declared
        if isinstance(t.get("shape"), list) and t["shape"][:1] == [-1]
    }
    for name, found in outputs.items():
        where = f"outputs.{name}"
        problems.extend(p for p in _tensor_problems(where, found) if ".datatype" not in p)
        shape = found.get("shape")
        if batch is None or name not in batched or not isinstance(shape, list):
            continue
        if not shape or shape[0] != batch:
            problems.append(f"{where}.shape: {shape}, for a batch of {batch}")
    if not outputs:
        problems.append("outputs: none")
    return problems


#: What the Open Inference Protocol documents of a model's metadata; the rest is not recorded.
INFERENCE_METADATA = ("name", "versions", "platform", "inputs", "outputs")
#: The most of a server's metadata a Model's status records: it is written to etcd with every
#: change, and a server (an external Model's, anyone's) chooses what it says.
MAX_METADATA_BYTES = 16 * 2**10


def recorded(metadata: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The documented fields of a server's metadata, as a status may hold them: JSON (no NaN),
    and not larger than MAX_METADATA_BYTES, else a note saying why there is nothing."""
    kept = {key: metadata[key] for key in keys if key in metadata}
    try:
        size = len(json.dumps(kept, allow_nan=False))
    except ValueError:
        return {"omitted": "the server's metadata holds a number JSON cannot carry (NaN)"}
    if size > MAX_METADATA_BYTES:
        return {
            "omitted": f"the server's metadata is {size // 2**10} KiB, more than the "
            f"{MAX_METADATA_BYTES // 2**10} KiB a status records"
        }
    return kept


# -- DEEPaaS ---------------------------------------------------------------------------------


#: What seed 004 names a DEEPaaS model's metadata by; recorded in the Model's status.
DEEPAAS_METADATA = ("id", "name", "description", "license", "author", "version", "url", "links")


def deepaas_route(entry: Mapping[str, Any]) -> str:
    """The name a DEEPaaS model is served under (`/v2/models/<name>/...`): its self link's. A
    model's own metadata may give it another `id` (DEEPaaS lets `get_metadata` override the
    listing, and falls back to "0"), but the routes keep the entry point's name."""
    for link in entry.get("links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "self":
            href = str(link.get("href") or "").rstrip("/")
            if href.rsplit("/", 2)[-2:-1] == ["models"]:
                return href.rsplit("/", 1)[-1]
    return str(entry.get("id"))


def deepaas_model(listing: Any, wanted: str | None) -> Mapping[str, Any] | None:
    """The model's entry in GET /v2/models/ (`{models: [...]}`): `wanted` (by the name it is
    served under, or its id), or the first."""
    models = listing.get("models") if isinstance(listing, Mapping) else None
    for entry in models or []:
        if not isinstance(entry, Mapping):
            continue
        if wanted is None or wanted in (deepaas_route(entry), entry.get("id")):
            return entry
    return None


def deepaas_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    return recorded(entry, DEEPAAS_METADATA)


def predict_response_schema(openapi: Any, model: str) -> dict[str, Any] | None:
    """The 200 answer's schema of POST /v2/models/{model}/predict/ in the server's own OpenAPI
    (Swagger 2) document, with its definitions, as a JSON Schema; None when it publishes none."""
    if not isinstance(openapi, Mapping):
        return None
    paths = openapi.get("paths") or {}
    operation = None
    for path, item in paths.items():
        # A server started with --base-path publishes its paths under that prefix.
        if str(path).rstrip("/").endswith(f"/v2/models/{model}/predict") and isinstance(
            item, Mapping
        ):
            operation = item.get("post")
    responses = operation.get("responses") if isinstance(operation, Mapping) else None
    answer = (responses or {}).get("200") or (responses or {}).get(200)
    schema = answer.get("schema") if isinstance(answer, Mapping) else None
    if not isinstance(schema, Mapping):
        return None
    definitions = dict(openapi.get("definitions") or {})
    placeholder = definitions.get("Prediction")
    if schema.get("$ref") == "#/definitions/Prediction" and isinstance(placeholder, Mapping):
        # A model that declares no schema: DEEPaaS publishes its placeholder (predictions: a
        # string) but answers whatever the model returns. Only its shape is judged then.
        properties = dict(placeholder.get("properties") or {})
        if (properties.get("predictions") or {}).get("type") == "string":
            properties["predictions"] = {}
            definitions["Prediction"] = {**placeholder, "properties": properties}
    judged: dict[str, Any] = _nullable({**schema, "definitions": definitions})
    return judged


def _nullable(schema: Any) -> Any:
    """Swagger 2's `x-nullable: true` (how apispec writes a field that may be None) as JSON
    Schema says it: the type, or null."""
    if isinstance(schema, list):
        return [_nullable(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    node = {key: _nullable(value) for key, value in schema.items()}
    if node.get("x-nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    return node


def schema_problems(schema: Mapping[str, Any], answer: Any) -> list[str]:
    """Where `answer` breaks `schema`, each named by its field."""
    validator = jsonschema.Draft4Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(answer), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(part) for part in error.absolute_path) or "the answer"
        problems.append(f"{where}: {error.message}")
    return problems[:10]


__all__ = [
    "DEEPAAS",
    "MLFLOW",
    "MLFLOW_INPUTS",
    "MODELYARD",
    "OPEN_INFERENCE",
    "REQUEST_FIELDS",
    "batch_of",
    "deepaas_metadata",
    "deepaas_model",
    "deepaas_route",
    "inference_answer_problems",
    "inference_request_problems",
    "metadata_problems",
    "mlflow_answer_problems",
    "mlflow_rows",
    "mlflow_signature_problems",
    "predict_response_schema",
    "recorded",
    "request_problems",
    "schema_problems",
]

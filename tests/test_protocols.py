"""The serving runtimes' protocols judged without a server: what a template's sample request
must be, and which answers break the protocol — each named by its field, as the Model's
status shows it. The same rules judge the real servers in tests/test_runtimes.py."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.api import protocols
from modelyard.api.v1alpha1 import parse
from support.examples import example

IRIS_ROWS = {
    "dataframe_split": {
        "columns": [
            "sepal length (cm)",
            "sepal width (cm)",
            "petal length (cm)",
            "petal width (cm)",
        ],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    }
}
INFER = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1.0] * 8}]}
IRIS_METADATA = {
    "name": "iris",
    "platform": "sklearn",
    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 4]}],
    "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
}


def template_with(probe: dict[str, Any]) -> Any:
    document = example("ModelTemplate", "custom-reranking-model-template")
    document["spec"]["modelType"] = "CUSTOM"
    document["spec"]["probe"] = probe
    return parse(document)


@pytest.mark.parametrize(
    ("probe", "expect"),
    [
        ({"protocol": "MLflow", "request": {"columns": []}}, "exactly one of"),
        (
            {"protocol": "MLflow", "request": {**IRIS_ROWS, "instances": [[1, 2, 3, 4]]}},
            "it has dataframe_split, instances",
        ),
        ({"protocol": "MLflow", "request": {"instances": "all"}}, "not a table of rows"),
        ({"protocol": "OpenInference", "request": INFER}, "names its model"),
        (
            {
                "protocol": "OpenInference",
                "model": "iris",
                "request": {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64"}]},
            },
            "inputs[0].data: missing",
        ),
        (
            {
                "protocol": "OpenInference",
                "model": "iris",
                "request": {
                    "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1]}]
                },
            },
            "1 values for shape [2, 4]",
        ),
        (
            {
                "protocol": "OpenInference",
                "model": "iris",
                "request": {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "float", "data": [1]}]
                },
            },
            "'float' is not a v2 datatype",
        ),
        (
            {"protocol": "DEEPaaS", "request": {"features": [1, 2]}},
            "features is not",
        ),
        (
            {"protocol": "DEEPaaS", "path": "/predict", "request": {"sepal_length": 5.1}},
            "path is DEEPaaS's own",
        ),
    ],
)
def test_a_sample_the_protocol_cannot_take_is_the_templates_error(
    probe: dict[str, Any], expect: str
) -> None:
    with pytest.raises(ValueError) as refused:
        template_with(probe)
    assert expect in str(refused.value), refused.value


def test_samples_each_protocol_takes_and_where_they_go() -> None:
    mlflow = template_with({"protocol": "MLflow", "request": IRIS_ROWS}).spec.probe
    assert mlflow.effective_path == "/invocations"
    infer = template_with({"protocol": "OpenInference", "model": "iris", "request": INFER})
    assert infer.spec.probe.effective_path == "/v2/models/iris/infer"
    deepaas = template_with(
        {"protocol": "DEEPaaS", "model": "iris", "request": {"sepal_length": 5.1}}
    )
    assert deepaas.spec.probe.effective_path == "/v2/models/iris/predict/"
    # The default protocol is the model types' contracts: CUSTOM takes any object.
    plain = template_with({"request": {"anything": 1}}).spec.probe
    assert plain.protocol.value == "Modelyard" and plain.effective_path == "/predict"


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        ({"predictions": [0, 2]}, None),
        ({"predictions": {"label": [0, 2], "score": [0.9, 0.8]}}, None),
        ({"predictions": [0]}, "predictions: 1 rows for 2 input rows"),
        ({"predictions": [0, 1, 2]}, "predictions: 3 rows for 2 input rows"),
        ({"predictions": {"label": [0]}}, "label has 1"),
        ({"outputs": [0, 2]}, "predictions: missing"),
        ([0, 2], "predictions: missing"),
    ],
)
def test_mlflow_promises_one_prediction_per_row(answer: Any, expect: str | None) -> None:
    found = protocols.mlflow_answer_problems(IRIS_ROWS, answer)
    assert (expect is None and not found) or (expect and any(expect in p for p in found)), found


def test_mlflow_counts_rows_in_each_of_its_formats() -> None:
    assert protocols.mlflow_rows(IRIS_ROWS) == 2
    assert protocols.mlflow_rows({"dataframe_records": [{"a": 1}] * 3}) == 3
    assert protocols.mlflow_rows({"instances": [[1, 2]] * 4}) == 4
    assert protocols.mlflow_rows({"inputs": [[1, 2]] * 3}) == 3
    # Columnar inputs are an object: the CRD types inputs as a list (the Open Inference
    # Protocol's tensors), so such a sample is refused when the template is applied.
    assert protocols.mlflow_rows({"inputs": {"a": [1, 2, 3]}}) is None


def outputs(*tensors: dict[str, Any]) -> dict[str, Any]:
    return {"model_name": "iris", "outputs": list(tensors)}


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        (outputs({"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0, 2]}), None),
        (
            outputs({"name": "predict", "shape": [1, 1], "datatype": "INT64", "data": [0]}),
            "outputs.predict.shape: [1, 1], for a batch of 2",
        ),
        (
            outputs({"name": "predict", "shape": [2, 1], "datatype": "FP32", "data": [0, 2]}),
            "outputs.predict.datatype: 'FP32', declared 'INT64'",
        ),
        (
            outputs({"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}),
            "outputs.predict.shape: [2], declared [-1, 1]",
        ),
        (
            outputs({"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0]}),
            "outputs.predict.data: 1 values for shape [2, 1]",
        ),
        (
            outputs({"name": "proba", "shape": [2, 3], "datatype": "FP64", "data": [0.1] * 6}),
            "outputs.predict: declared by the model, missing from the answer",
        ),
        ({"model_name": "iris"}, "outputs: missing"),
    ],
)
def test_open_inference_outputs_as_declared_and_one_per_input(
    answer: Any, expect: str | None
) -> None:
    found = protocols.inference_answer_problems(INFER, IRIS_METADATA, answer)
    assert (expect is None and not found) or (expect and any(expect in p for p in found)), found


def test_open_inference_metadata_names_the_model_and_types_its_tensors() -> None:
    assert protocols.metadata_problems(IRIS_METADATA, "iris") == []
    assert protocols.metadata_problems({**IRIS_METADATA, "name": "wine"}, "iris") == [
        "name: 'wine', not 'iris'"
    ]
    broken = {**IRIS_METADATA, "outputs": [{"name": "predict", "datatype": "int"}]}
    assert protocols.metadata_problems(broken, "iris") == ["outputs[0].datatype: 'int'"]


OPENAPI = {
    "swagger": "2.0",
    "paths": {
        "/v2/models/iris/predict/": {
            "post": {"responses": {"200": {"schema": {"$ref": "#/definitions/Prediction"}}}}
        }
    },
    "definitions": {
        "Prediction": {
            "type": "object",
            "required": ["labels", "probabilities"],
            "properties": {
                "labels": {"type": "array", "items": {"type": "string"}},
                "probabilities": {"type": "array", "items": {"type": "number"}},
            },
        }
    },
}


def test_deepaas_answers_are_judged_by_the_schema_the_server_publishes() -> None:
    schema = protocols.predict_response_schema(OPENAPI, "iris")
    assert schema is not None
    assert protocols.schema_problems(schema, {"labels": ["setosa"], "probabilities": [0.9]}) == []
    found = protocols.schema_problems(schema, {"labels": [3], "probabilities": [0.9]})
    assert found == ["labels.0: 3 is not of type 'string'"], found
    found = protocols.schema_problems(schema, {"labels": ["setosa"]})
    assert found == ["the answer: 'probabilities' is a required property"], found
    assert protocols.predict_response_schema(OPENAPI, "wine") is None


def test_deepaas_listing_names_the_model_and_its_metadata() -> None:
    listing = {
        "models": [
            {
                "id": "iris",
                "name": "iris",
                "description": "Iris flowers",
                "license": "MIT",
                "author": "modelyard",
                "version": "1.0.0",
                "url": "https://example.com",
                "links": [{"rel": "self", "href": "/v2/models/iris"}],
                "predict": {},
            }
        ]
    }
    entry = protocols.deepaas_model(listing, None)
    assert entry is not None and protocols.deepaas_model(listing, "wine") is None
    metadata = protocols.deepaas_metadata(entry)
    assert list(metadata) == list(protocols.DEEPAAS_METADATA)


IRIS_INPUTS = tuple(IRIS_ROWS["dataframe_split"]["columns"])


@pytest.mark.parametrize(
    ("request_", "expect"),
    [
        (IRIS_ROWS, []),
        # Columns the signature lacks are ignored by MLflow: no problem.
        (
            {"dataframe_split": {**IRIS_ROWS["dataframe_split"], "columns": [*IRIS_INPUTS, "id"]}},
            [],
        ),
        (
            {"dataframe_split": {"columns": list(IRIS_INPUTS[:2]), "data": [[5.1, 3.5]]}},
            ["dataframe_split.columns lacks petal length (cm), petal width (cm)"],
        ),
        (
            {"dataframe_split": {"data": [[5.1, 3.5, 1.4, 0.2]]}},
            [
                "dataframe_split names no columns; the model's signature requires "
                + ", ".join(IRIS_INPUTS)
            ],
        ),
        (
            {
                "dataframe_records": [
                    dict(zip(IRIS_INPUTS, [5.1, 3.5, 1.4, 0.2], strict=True)),
                    dict(zip(IRIS_INPUTS[1:], [3.0, 5.2, 2.3], strict=True)),
                ]
            },
            ["dataframe_records[1] lacks sepal length (cm)"],
        ),
        # instances and inputs are read by MLflow's own rules: left to the server.
        ({"instances": [[5.1, 3.5, 1.4, 0.2]]}, []),
    ],
)
def test_an_mlflow_sample_must_name_every_column_the_signature_requires(
    request_: dict[str, Any], expect: list[str]
) -> None:
    assert protocols.mlflow_signature_problems(request_, IRIS_INPUTS) == expect
    # No signature: nothing to judge by.
    assert protocols.mlflow_signature_problems(request_, ()) == []


async def test_a_sample_the_signature_refuses_is_not_sent() -> None:
    """ask_mlflow judges the sample first: ProbeRefused naming the columns, no request."""
    import json  # noqa: PLC0415

    from modelyard.reconcile.conformance.protocols import ask_mlflow  # noqa: PLC0415
    from modelyard.reconcile.conformance.targets import Target  # noqa: PLC0415

    class Unreachable:
        def url(self, path: str) -> str:
            return "http://iris" + path

        async def post(self, path: str, body: Any) -> Any:
            raise AssertionError(f"POST {path} was sent")

    sample = {"dataframe_split": {"columns": list(IRIS_INPUTS[1:]), "data": [[3.5, 1.4, 0.2]]}}
    target = Target(
        namespace="ml",
        url="http://iris",
        model_type="CUSTOM",
        probe_path="/invocations",
        probe_request=json.dumps(sample),
        protocol=protocols.MLFLOW,
        mlflow_inputs=IRIS_INPUTS,
    )
    check, said = await ask_mlflow(Unreachable(), target)  # type: ignore[arg-type]
    assert (check.ok, check.reason, said) == (False, "ProbeRefused", None)
    assert "dataframe_split.columns lacks sepal length (cm)" in check.message
    assert "The sample is wrong, not the server" in check.message
    assert "POST http://iris/invocations was not sent" in check.message


def test_the_signature_read_from_an_mlmodel_file() -> None:
    """Named columns are recorded (optional ones as such); a tensor or unnamed signature, or
    none, gives no columns to judge a sample by."""
    from modelyard.registry.mlflow import (  # noqa: PLC0415
        SignatureError,
        SignatureInput,
        signature_inputs,
    )

    def mlmodel(inputs: str | None) -> str:
        signature = f"signature:\n  inputs: '{inputs}'\n" if inputs is not None else ""
        return "flavors:\n  python_function: {}\n" + signature

    assert signature_inputs(
        mlmodel(
            '[{"type": "double", "name": "a", "required": true}, '
            '{"type": "string", "name": "b", "required": false}]'
        )
    ) == (SignatureInput("a", "double"), SignatureInput("b", "string", required=False))
    assert signature_inputs(mlmodel(None)) == ()
    assert signature_inputs(mlmodel('[{"type": "double", "required": true}]')) == ()
    assert (
        signature_inputs(
            mlmodel('[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]')
        )
        == ()
    )
    with pytest.raises(SignatureError, match="not JSON"):
        signature_inputs(mlmodel("[{not json"))


def test_the_signature_of_the_version_the_workers_run_reaches_the_probe() -> None:
    """The Model's pass finds the required columns in its Ready ModelVersion's status: none
    for a version without a signature, one not Ready, or another model's."""
    from modelyard.api.v1alpha1 import Model  # noqa: PLC0415
    from modelyard.reconcile.model.world import ModelWorld  # noqa: PLC0415

    def version(number: str, signature: Any, ready: str = "True", model: str = "iris") -> Any:
        mlflow = {"version": "1", "modelUri": "models:/iris/1"}
        if signature is not None:
            mlflow["signature"] = signature
        return {
            "spec": {"model": model, "version": number},
            "status": {"mlflow": mlflow, "conditions": [{"type": "Ready", "status": ready}]},
        }

    columns = {
        "inputs": [
            {"name": "a", "type": "double", "required": True},
            {"name": "b", "type": "double", "required": False},
        ]
    }
    world = ModelWorld(
        model={},
        template=None,
        versions=[
            version("1.0.0", columns, model="other"),
            version("1.0.0", columns),
            version("1.1.0", None),
            version("1.2.0", columns, ready="False"),
        ],
    )
    model = Model.model_validate(
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"template": "t", "version": {"model": "iris", "version": ">=1.0.0"}},
        }
    )
    assert world.mlflow_inputs(model, "1.0.0") == ("a",)
    assert world.mlflow_inputs(model, "1.1.0") == ()
    assert world.mlflow_inputs(model, "1.2.0") == ()
    assert world.mlflow_inputs(model, None) == ()


def test_open_inference_judges_only_the_outputs_asked_for_and_batches_only_batched_ones() -> None:
    """A request may name the outputs it wants; a model without a batch dimension (Triton's
    max_batch_size 0) answers its declared shape whole: neither is a mismatch."""
    two = {
        **IRIS_METADATA,
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
            {"name": "proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }
    only_predict = {**INFER, "outputs": [{"name": "predict"}]}
    answer = outputs({"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": [0, 2]})
    assert protocols.inference_answer_problems(only_predict, two, answer) == []
    assert protocols.inference_answer_problems(INFER, two, answer) == [
        "outputs.proba: declared by the model, missing from the answer"
    ]
    unbatched = {
        "name": "iris",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [3]}],
    }
    one = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1.0] * 4}]}
    whole = outputs({"name": "probabilities", "shape": [3], "datatype": "FP32", "data": [0.1] * 3})
    assert protocols.inference_answer_problems(one, unbatched, whole) == []


def test_deepaas_routes_by_its_self_link_whatever_id_the_model_claims() -> None:
    """DEEPaaS lets a model's get_metadata override the listing's id (or falls back to "0"),
    while its routes keep the entry point's name: the self link says where to send."""
    claims = {
        "models": [
            {"id": "0", "name": "plain", "links": [{"rel": "self", "href": "/v2/models/plain"}]},
            {"id": "iris-v1", "links": [{"rel": "self", "href": "/api/v2/models/iris/"}]},
        ]
    }
    first = protocols.deepaas_model(claims, None)
    assert first is not None and protocols.deepaas_route(first) == "plain"
    by_route = protocols.deepaas_model(claims, "iris")
    by_id = protocols.deepaas_model(claims, "iris-v1")
    assert by_route is by_id is not None and protocols.deepaas_route(by_route) == "iris"


def test_deepaas_schemas_read_as_the_server_writes_them() -> None:
    """Swagger 2's x-nullable means null is allowed; a server under --base-path publishes its
    paths with the prefix; a model without a schema gets DEEPaaS's placeholder, which says
    predictions are a string while the server answers whatever the model returns."""
    nullable = {
        "paths": {
            "/api/v2/models/iris/predict/": {
                "post": {"responses": {"200": {"schema": {"$ref": "#/definitions/Out"}}}}
            }
        },
        "definitions": {
            "Out": {
                "type": "object",
                "properties": {"score": {"type": "number", "x-nullable": True}},
            }
        },
    }
    schema = protocols.predict_response_schema(nullable, "iris")
    assert schema is not None
    assert protocols.schema_problems(schema, {"score": None}) == []
    assert protocols.schema_problems(schema, {"score": "high"}) != []
    placeholder = {
        "paths": {
            "/v2/models/plain/predict/": {
                "post": {"responses": {"200": {"schema": {"$ref": "#/definitions/Prediction"}}}}
            }
        },
        "definitions": {
            "Prediction": {
                "type": "object",
                "required": ["status", "predictions"],
                "properties": {"status": {"type": "string"}, "predictions": {"type": "string"}},
            }
        },
    }
    schema = protocols.predict_response_schema(placeholder, "plain")
    assert schema is not None
    assert protocols.schema_problems(schema, {"status": "OK", "predictions": {"got": 1}}) == []
    assert protocols.schema_problems(schema, {"predictions": {"got": 1}}) == [
        "the answer: 'status' is a required property"
    ]


def test_a_servers_metadata_is_recorded_bounded_and_as_json() -> None:
    """What a server says of its model lands in etcd: only the documented fields, never more
    than 16 KiB, never a NaN JSON cannot carry."""
    assert protocols.recorded({**IRIS_METADATA, "parameters": {"x": 1}}, ("name",)) == {
        "name": "iris"
    }
    huge = protocols.recorded({"name": "x" * 20000}, ("name",))
    assert list(huge) == ["omitted"] and "more than the 16 KiB" in huge["omitted"]
    nan = protocols.recorded({"name": float("nan")}, ("name",))
    assert list(nan) == ["omitted"] and "NaN" in nan["omitted"]


def test_a_new_word_from_the_server_replaces_the_old_one_whole() -> None:
    """status.server is written by a merge patch, which merges objects key by key: a key the
    server no longer says is sent as null, so it does not linger (and the next pass, finding
    the status as computed, writes nothing)."""
    from modelyard.reconcile.model.publish import _replaced  # noqa: PLC0415

    before = {"server": {"protocol": "DEEPaaS", "metadata": {"id": "iris", "license": "MIT"}}}
    after = {"server": {"protocol": "DEEPaaS", "metadata": {"id": "iris"}}}
    assert _replaced(before, after, "server") == {
        "server": {"protocol": "DEEPaaS", "metadata": {"license": None, "id": "iris"}}
    }
    assert _replaced({}, after, "server") == {}

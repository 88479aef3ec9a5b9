"""A DEEPaaS V2 model: the iris classifier, behind DEEPaaS's model API (seed 004).

DEEPaaS finds it as the entry point `iris` of `deepaas.v2.model` and calls this module's
functions; `deepaas-run --model-name iris` serves it at /v2/models/iris/.

- `warm()` loads the model and then waits WARM_SECONDS (default 3): DEEPaaS runs it before it
  opens its port, so a client sees the server become ready only after the warm-up.
- `get_predict_args()` takes the four measurements; `predict()` answers every species with its
  probability, most likely first, in the shape `schema` declares (DEEPaaS checks each answer
  against it and publishes it in /swagger.json).
- IRIS_BREAK_SCHEMA makes predict break that schema: `type` (or `1`) answers the probabilities
  as strings, which DEEPaaS's own check lets through (marshmallow reads "0.97" as a number) so
  the client gets a 200 whose `probability` is not the declared number; `missing` leaves out
  each prediction's required `label`, which DEEPaaS itself refuses with a 500.

DEEPaaS calls warm() and predict() in a worker process of its own (multiprocessing, spawn), so
the loaded model lives in this module's globals there.
"""

from __future__ import annotations

import os
import time
from typing import Any

import marshmallow
from webargs import fields

from modelyard_runtimes import MODELS, iris

_model: Any = None


def _load() -> Any:
    global _model  # noqa: PLW0603 -- one model per worker process, loaded once
    if _model is None:
        import joblib  # noqa: PLC0415 -- slow to import; the server's own process never needs it

        _model = joblib.load(os.environ.get("IRIS_MODEL", f"{MODELS}/iris.joblib"))
    return _model


def get_metadata() -> dict[str, Any]:
    return {
        "id": "iris",
        "name": "iris",
        "description": "Iris species from four flower measurements (logistic regression "
        "trained on scikit-learn's bundled iris data).",
        "license": "Apache-2.0",
        "author": "modelyard",
        "version": os.environ.get("IRIS_VERSION", "1.0.0"),
        "url": "https://scikit-learn.org/stable/datasets/toy_dataset.html#iris-dataset",
        "links": [
            {
                "rel": "dataset",
                "href": "https://archive.ics.uci.edu/dataset/53/iris",
                "type": "text/html",
            }
        ],
    }


def warm() -> None:
    _load()
    time.sleep(float(os.environ.get("WARM_SECONDS", "3")))


def get_predict_args() -> dict[str, Any]:
    return {
        name: fields.Float(required=True, metadata={"description": f"{name} in centimetres"})
        for name in iris.FEATURES
    }


class IrisPrediction(marshmallow.Schema):
    label = fields.Str(required=True, metadata={"description": "Species"})
    probability = fields.Float(required=True, metadata={"description": "Between 0 and 1"})


class IrisResponse(marshmallow.Schema):
    status = fields.Str(required=True)
    predictions = fields.List(fields.Nested(IrisPrediction), required=True)


#: What every answer of predict() is, checked by DEEPaaS and published in its OpenAPI document.
schema = IrisResponse


def predict(**kwargs: Any) -> dict[str, Any]:
    row = [[float(kwargs[name]) for name in iris.FEATURES]]
    probabilities = _load().predict_proba(row)[0]
    ranked = sorted(zip(iris.SPECIES, probabilities, strict=True), key=lambda p: -p[1])
    predictions: list[dict[str, Any]] = [
        {"label": label, "probability": round(float(p), 6)} for label, p in ranked
    ]
    broken = os.environ.get("IRIS_BREAK_SCHEMA", "")
    if broken in ("1", "type"):
        predictions = [{**p, "probability": str(p["probability"])} for p in predictions]
    elif broken == "missing":
        predictions = [{"probability": p["probability"]} for p in predictions]
    return {"status": "OK", "predictions": predictions}

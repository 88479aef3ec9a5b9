"""Real serving runtimes under modelyard, on the real node, judged in their own protocols.

One image (`image/runtimes/`, built here without Docker: `support.runtime_image`) holds
MLServer with its scikit-learn runtime (the Open Inference Protocol), DEEPaaS with a small iris
model of ours (seed 004's model API: metadata, predict arguments, a response schema, warm()),
and MLflow's scoring server (seed 003). The models are trained from scikit-learn's bundled iris
data; nothing is downloaded at run time. Every assertion is what a user sees in `kubectl get
model -o yaml`: the state, the reason, the message, the metadata the server published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support import runtime_image
from support.cluster import VERSIONS, Cluster, RealNode
from support.controllers import CONSENT, MODELS, apply_documents, condition
from support.mlflow_server import MlflowServer
from support.node import NODE_IP
from support.operator_process import OperatorProcess, eventually
from support.runtime_image import Runtime
from support.workloads import model, registry_documents
from test_node import history, reaches

Obj = dict[str, Any]

#: Two flowers, as each protocol's sample request sends them.
ROWS = [list(runtime_image.SAMPLES[0]), list(runtime_image.SAMPLES[2])]
INFER = {
    "inputs": [
        {
            "name": "features",
            "shape": [len(ROWS), len(runtime_image.FEATURES)],
            "datatype": "FP64",
            "data": [value for row in ROWS for value in row],
        }
    ]
}
PREDICT_ARGS = dict(zip(runtime_image.FEATURES, runtime_image.SAMPLES[0], strict=True))


def runtime_template(name: str, runtime: Runtime, digest: str, probe: Obj) -> Obj:
    """A template running one server of the image, probed in its protocol."""
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name},
        "spec": {
            "modelType": "CUSTOM",
            "endpointType": "SYNC",
            "image": {
                "registry": "local",
                "repository": runtime_image.REPOSITORY,
                "digest": digest,
            },
            "command": list(runtime.command),
            "args": list(runtime.args),
            "env": dict(runtime.env),
            "port": runtime.port,
            "readiness": {"path": runtime.readiness_path, "periodSeconds": 1},
            "startupTimeoutSeconds": 240,
            # A third of a core: Python servers import for many seconds; the node has two cores.
            "resources": {"cpus": "300m", "memory": "512Mi"},
            "scaling": {"minWorkers": 1, "maxWorkers": 1, "perWorker": 4},
            "probe": {**probe, "timeoutSeconds": 20},
        },
    }


def states(cluster: Cluster, name: str) -> list[tuple[str | None, str | None]]:
    """The (state, Ready reason) changes of one Model, as the watch reported them."""
    seen: list[tuple[str | None, str | None]] = []
    for _, _, event in cluster.log:
        obj = event["object"]
        if obj.get("kind") != "Model" or obj["metadata"]["name"] != name:
            continue
        now = ((obj.get("status") or {}).get("state"), condition(obj).get("reason"))
        if not seen or seen[-1] != now:
            seen.append(now)
    return seen


async def failed_with(
    cluster: Cluster, operator: OperatorProcess, name: str, reason: str, timeout: float = 180
) -> Obj:
    await eventually(
        lambda: (
            (m := cluster.get(MODELS, cluster.namespace, name))
            and (m.get("status") or {}).get("state") == "FAILED"
            and condition(m).get("reason") == reason
        ),
        timeout,
        lambda: f"Model {name} FAILED ({reason}), after {history(cluster)}",
        operator,
    )
    found = cluster.get(MODELS, cluster.namespace, name)
    assert found is not None
    return found


@pytest.mark.timeout(420)
async def test_a_deepaas_model_is_ready_after_warm_with_its_metadata_and_its_schema(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess, runtimes: str
) -> None:
    """Seed 004: DEEPaaS runs the model's warm() before it serves, so the Model is READY only
    after it; its metadata is the Model's status.server; the predict answer is held to the
    schema the model declares. A model whose answer breaks that schema is FAILED, naming the
    field."""
    probe = {"protocol": "DEEPaaS", "model": runtime_image.MODEL, "request": PREDICT_ARGS}
    warm = runtime_image.DEEPAAS.with_env(WARM_SECONDS="8")
    broken = runtime_image.DEEPAAS_BROKEN_SCHEMA
    await apply_documents(
        cluster,
        [
            *registry_documents(real_node),
            runtime_template("deepaas", warm, runtimes, probe),
            runtime_template("deepaas-broken", broken, runtimes, probe),
            model("iris", "deepaas"),
            model("iris-broken", "deepaas-broken"),
        ],
    )
    ready = await reaches(cluster, node_operator, "iris", ("READY", "Available"), 240)
    # While warm() ran, the Model said it was deploying: never READY before the model was.
    seen = states(cluster, "iris")
    assert seen[-1] == ("READY", "Available"), seen
    assert any(state == "DEPLOYING" for state, _ in seen), seen
    conformant = condition(ready, "Conformant")
    assert conformant["status"] == "True", conformant
    assert "/v2/models/iris/predict/" in conformant["message"], conformant
    server = ready["status"]["server"]
    assert server["protocol"] == "DEEPaaS" and server["model"] == "iris", server
    metadata = server["metadata"]
    for field in ("id", "name", "description", "license", "author", "version", "url", "links"):
        assert field in metadata, (field, metadata)
    assert metadata["id"] == "iris"

    failing = await failed_with(cluster, node_operator, "iris-broken", "SchemaMismatch")
    message = condition(failing)["message"]
    assert "breaks the DEEPaaS protocol" in message, message
    assert "predictions.0.probability" in message and "is not of type 'number'" in message, message


@pytest.mark.timeout(420)
async def test_an_open_inference_model_is_ready_with_its_metadata_and_judged_by_it(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess, runtimes: str
) -> None:
    """MLServer (the Open Inference Protocol): READY once server and model say ready and the
    inference answers every output the model declares, with the batch's first dimension; the
    model's inputs and outputs in status.server. An answer one row off the batch is
    SchemaMismatch, naming the output."""
    probe = {"protocol": "OpenInference", "model": runtime_image.MODEL, "request": INFER}
    await apply_documents(
        cluster,
        [
            *registry_documents(real_node),
            runtime_template("mlserver", runtime_image.MLSERVER, runtimes, probe),
            runtime_template("mlserver-wrong", runtime_image.MLSERVER_WRONG_SHAPE, runtimes, probe),
            model("iris", "mlserver"),
            model("iris-wrong", "mlserver-wrong"),
        ],
    )
    ready = await reaches(cluster, node_operator, "iris", ("READY", "Available"), 240)
    server = ready["status"]["server"]
    assert server["protocol"] == "OpenInference" and server["model"] == "iris", server
    metadata = server["metadata"]
    assert metadata["name"] == "iris"
    assert metadata["inputs"] and metadata["outputs"], metadata
    assert all({"name", "datatype", "shape"} <= set(t) for t in metadata["outputs"]), metadata
    assert "/v2/models/iris/infer" in condition(ready, "Conformant")["message"]

    failing = await failed_with(cluster, node_operator, "iris-wrong", "SchemaMismatch")
    message = condition(failing)["message"]
    assert "breaks the OpenInference protocol" in message, message
    assert f"for a batch of {len(ROWS)}" in message, message


def mlflow_registry(url: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "mlflow"},
        "spec": {"type": "mlflow", "url": url, **spec},
    }


def mlflow_version(object_name: str, number: str, **mlflow: str) -> Obj:
    """A ModelVersion of `iris` from the MLflow registry: by alias or by version number."""
    return {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": object_name},
        "spec": {"model": "iris", "version": number, "registry": "mlflow", "mlflow": mlflow},
    }


FEWER_ROWS_MODEL = '''
"""A model that answers one prediction whatever it is asked: MLflow's promise broken."""
import mlflow.pyfunc
import mlflow.models


class FewerRows(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0]


mlflow.models.set_model(FewerRows())
'''


def log_iris(server: MlflowServer, *, strength: float) -> str:
    """An sklearn iris classifier trained now, from the data scikit-learn ships, logged and
    registered as `iris` the way a data scientist does; its version number."""
    from sklearn.datasets import load_iris  # noqa: PLC0415 -- slow; only this test needs it
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    features, labels = load_iris(return_X_y=True, as_frame=True)
    features.columns = list(runtime_image.FEATURES)
    # A linear model: MLflow saves scikit-learn models with skops, which loads it as trusted.
    classifier = LogisticRegression(C=strength, max_iter=1000).fit(features, labels)
    return server.log_model(
        "iris",
        lambda mlflow: mlflow.sklearn.log_model(
            classifier, name="model", input_example=features.head(2)
        ),
    )


def log_fewer_rows(server: MlflowServer, directory: Path) -> str:
    code = directory / "fewer_rows.py"
    code.write_text(FEWER_ROWS_MODEL)
    return server.log_model(
        "iris", lambda mlflow: mlflow.pyfunc.log_model(name="model", python_model=str(code))
    )


def mlflow_documents(server: MlflowServer, digest: str, reader: tuple[str, str]) -> list[Obj]:
    probe = {
        "protocol": "MLflow",
        "request": {"dataframe_split": {"columns": list(runtime_image.FEATURES), "data": ROWS}},
    }
    serving = runtime_image.mlflow("$(MODEL_URI)", "")
    template = runtime_template("mlflow-serving", serving, digest, probe)
    # The operator sets MLFLOW_TRACKING_URI, MODEL_URI and the credentials from the Registry
    # and the pinned version: the template names none of them.
    template["spec"]["env"] = {
        k: v for k, v in template["spec"]["env"].items() if k != "MLFLOW_TRACKING_URI"
    }
    template["spec"]["rollout"] = {"strategy": "Canary", "analysisSeconds": 10}
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mlflow-reader", "labels": CONSENT},
            "type": "kubernetes.io/basic-auth",
            "stringData": {"username": reader[0], "password": reader[1]},
        },
        mlflow_registry(server.url, credentialsSecret="mlflow-reader", checkIntervalSeconds=10),
        template,
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Model",
            "metadata": {"name": "iris"},
            "spec": {
                "template": "mlflow-serving",
                "version": {"model": "iris", "version": ">=1.0.0"},
            },
        },
    ]


@pytest.mark.timeout(900)
async def test_seed_003_an_mlflow_model_by_alias_serves_rolls_and_rolls_back(
    cluster: Cluster,
    real_node: RealNode,
    node_operator: OperatorProcess,
    runtimes: str,
    tmp_path: Path,
) -> None:
    """Seed 003 end to end: an iris classifier logged and registered in a real MLflow server
    (basic auth, artifacts proxied by the tracking server), a ModelVersion pinned to the alias
    `champion`, and a Model whose pod — MLflow's own scoring server — loads it from the
    registry with the Registry's credentials. READY with one prediction per row. `champion`
    moved to version 2 and published as 1.1.0 rolls out by canary; a version 3 that answers
    fewer rows than asked is rolled back, naming the rows."""
    server = await MlflowServer(tmp_path / "mlflow", basic_auth=True, host=NODE_IP).start()
    try:
        reader = ("modelyard-reader", "reader-pa55word-1234")
        server.create_user(*reader)
        first = log_iris(server, strength=0.01)
        server.call("set_registered_model_alias", "iris", "champion", first)
        await apply_documents(
            cluster,
            [
                *registry_documents(real_node),
                *mlflow_documents(server, runtimes, reader),
                mlflow_version("iris-1-0-0", "1.0.0", name="iris", alias="champion"),
            ],
        )
        ready = await reaches(cluster, node_operator, "iris", ("READY", "Available"), 300)
        assert ready["status"]["resolvedVersion"] == "1.0.0"
        conformant = condition(ready, "Conformant")
        assert "answered 2 predictions for 2 rows" in conformant["message"], conformant

        # The data scientist moves champion to a better fit; the platform publishes it.
        second = log_iris(server, strength=1.0)
        server.call("set_registered_model_alias", "iris", "champion", second)
        await apply_documents(
            cluster, [mlflow_version("iris-1-1-0", "1.1.0", name="iris", alias="champion")]
        )
        await eventually(
            lambda: (
                (m := cluster.get(MODELS, cluster.namespace, "iris"))
                and ((m.get("status") or {}).get("rollout") or {}).get("phase") == "Promoted"
                and m["status"].get("resolvedVersion") == "1.1.0"
            ),
            300,
            lambda: f"1.1.0 promoted, after {history(cluster)}",
            node_operator,
        )
        pinned = cluster.get(VERSIONS, cluster.namespace, "iris-1-1-0")
        assert pinned is not None and pinned["status"]["mlflow"]["version"] == second

        # Version 3 answers one prediction for two rows: the canary is rolled back.
        third = log_fewer_rows(server, tmp_path)
        await apply_documents(
            cluster, [mlflow_version("iris-1-2-0", "1.2.0", name="iris", version=third)]
        )
        rolled_back = await eventually(
            lambda: (
                (m := cluster.get(MODELS, cluster.namespace, "iris"))
                and ((m.get("status") or {}).get("rollout") or {}).get("phase") == "RolledBack"
                and m["status"]["rollout"]
            ),
            300,
            lambda: f"1.2.0 rolled back, after {history(cluster)}",
            node_operator,
        )
        assert rolled_back["candidate"].startswith("1.2.0"), rolled_back
        assert "predictions: 1 rows for 2 input rows" in rolled_back["message"], rolled_back
        serving = cluster.get(MODELS, cluster.namespace, "iris")
        assert serving is not None and serving["status"]["resolvedVersion"] == "1.1.0"
        assert serving["status"]["state"] == "READY"
    finally:
        await server.stop()

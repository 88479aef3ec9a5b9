"""The real model servers' image (`image/runtimes/build.sh`): MLServer with its scikit-learn
runtime (Open Inference Protocol), DEEPaaS with our iris model, and MLflow's scoring server, in
one image built without Docker and cached per source fingerprint in `.cache/runtime-image/`.

Each runtime is a `Runtime`: what a ModelTemplate gives its container (command, args, env,
port) and the path its readiness probe asks. `image/runtimes/README.md` shows the answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from support import images, operator_image

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "runtime-image"
#: Where the image is pushed in the local registry.
REPOSITORY = "modelyard/runtimes"
#: What the image is made of: the build, the lock, and the package of our models (not the
#: lock's input, the smoke test or the README, which change nothing in it).
SOURCES = tuple(
    f"image/runtimes/{name}"
    for name in ("build.sh", "requirements.txt", "pyproject.toml", "modelyard_runtimes")
)
#: Every runtime listens here (a ModelTemplate's default port).
PORT = 8080
#: The model every runtime of the image serves (MLflow's is whatever the registry names).
MODEL = "iris"
#: The four features, in the order the model takes them, and a flower of each species.
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SAMPLES = ((5.1, 3.5, 1.4, 0.2), (6.2, 2.9, 4.3, 1.3), (6.3, 3.3, 6.0, 2.5))
SPECIES = ("setosa", "versicolor", "virginica")
BIN = "/opt/runtimes/bin"
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class Runtime:
    """How a template runs one server of the image, and where it says it is ready."""

    name: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    readiness_path: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = PORT

    def with_env(self, **env: str) -> Runtime:
        return replace(self, env={**self.env, **env})


#: MLServer's own scikit-learn runtime: /v2/health/ready, GET /v2/models/iris (inputs and
#: outputs declared), POST /v2/models/iris/infer.
MLSERVER = Runtime(
    "mlserver",
    command=(f"{BIN}/mlserver", "start"),
    args=("/opt/models/mlserver",),
    readiness_path="/v2/health/ready",
    env={"MLSERVER_HTTP_PORT": str(PORT)},
)
#: The same model behind a runtime whose answers have one row more than the batch.
MLSERVER_WRONG_SHAPE = replace(
    MLSERVER, name="mlserver-wrong-shape", args=("/opt/models/mlserver-wrong-shape",)
)
#: DEEPaaS serving our model `iris`; it opens its port only after warm() (WARM_SECONDS).
DEEPAAS = Runtime(
    "deepaas",
    command=(f"{BIN}/deepaas-run",),
    args=("--listen-ip", "0.0.0.0", "--listen-port", str(PORT), "--model-name", MODEL),
    readiness_path="/v2/models/",
    env={"WARM_SECONDS": "3"},
)
#: DEEPaaS whose predict answers probabilities as strings, against its declared schema (200).
DEEPAAS_BROKEN_SCHEMA = replace(DEEPAAS, name="deepaas-broken-schema").with_env(
    IRIS_BREAK_SCHEMA="type"
)


def mlflow(model_uri: str, tracking_uri: str, **env: str) -> Runtime:
    """MLflow's scoring server for `model_uri` (models:/NAME@ALIAS or models:/NAME/VERSION),
    which it loads from the tracking server at start; `env` adds e.g.
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."""
    return Runtime(
        "mlflow",
        command=(f"{BIN}/mlflow", "models", "serve"),
        args=("-m", model_uri, "--env-manager", "local", "-h", "0.0.0.0", "-p", str(PORT)),
        readiness_path="/ping",
        env={"MLFLOW_TRACKING_URI": tracking_uri, **env},
    )


IMAGE = images.ScriptImage(CACHE, SOURCES, "image/runtimes/build.sh", REPOSITORY)


def build() -> tuple[Path, str, float]:
    """The OCI layout holding the image, its tag, and the seconds building took (0: cached)."""
    operator_image.require_tools()  # the same tools, root and CI's rule as the operator's
    return IMAGE.build()


def push(layout: Path, tag: str, registry: str, credentials: tuple[str, str]) -> str:
    """Push to `registry` as REPOSITORY:tag; the image reference without the tag."""
    return IMAGE.push(layout, tag, registry, credentials)


compressed_megabytes = images.compressed_megabytes

"""Examples are accepted and a catalogue of bad manifests is refused — by both gatekeepers.

The first gatekeeper is a real kube-apiserver with the generated CRDs installed: each manifest
goes through server-side apply with strict field validation, as `kubectl apply --server-side`
sends it, so the server's own structural schema, CEL compiler and cost estimate judge it. The
second is the pydantic models the operator and `modelyard render` read manifests with.

Each bad manifest is a good example with one thing broken, and the reason it must fail; `expect`
is a fragment of the message the user sees, so a refusal for an unrelated reason does not count.
A few checks cannot be made at apply time — parameter values and defaults are untyped in the
schema, and an untyped field is invisible to the server's CEL — so those entries are marked
`by_operator`: the server accepts them, and the operator refuses them in the object's status.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
import semver
from pydantic import ValidationError

from modelyard.api import formats
from modelyard.api.v1alpha1 import API_VERSION, parse
from support.api import Api, ApiRefusal, resource_path
from support.cluster import Session
from support.examples import example, example_documents

EXAMPLE_DOCUMENTS = example_documents()
NAMESPACE = "ml-team"


class Server:
    """The session's API server, as `kubectl apply --server-side` talks to it."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def refusal(self, document: dict[str, Any], *, dry_run: bool = True) -> str | None:
        """The server's message if server-side apply refuses `document`, None if it accepts it.

        Apply answers type errors, unknown fields and duplicate list keys with 500 "failed to
        create typed patch object" (a real server does; kubectl shows it as is), and the rest
        — schema bounds, CEL rules — with 422."""
        try:
            self.api.apply(document, dry_run=dry_run)
        except ApiRefusal as refused:
            assert refused.code == 422 or (
                refused.code == 500 and "typed patch" in refused.message
            ), refused
            return refused.message
        return None

    def create_refusal(self, document: dict[str, Any]) -> str | None:
        """The same through a plain create (`kubectl create`, client-side apply): always 422."""
        resource = f"{API_VERSION}/{document['kind'].lower()}s".replace("registrys", "registries")
        try:
            self.api.request(
                "POST",
                resource_path(resource, document["metadata"]["namespace"]),
                document,
                query={"dryRun": "All", "fieldValidation": "Strict"},
            )
        except ApiRefusal as refused:
            assert refused.code in (400, 422), refused
            return refused.message
        return None


@pytest.fixture(scope="module")
def server(session: Session) -> Server:
    """The examples' namespace exists: they are applied for real, as a user would."""
    session.api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return Server(session.api)


@pytest.mark.parametrize(
    "document", [doc for _, doc in EXAMPLE_DOCUMENTS], ids=[i for i, _ in EXAMPLE_DOCUMENTS]
)
def test_every_example_is_accepted(server: Server, document: dict[str, Any]) -> None:
    assert server.refusal(document, dry_run=False) is None
    if document["apiVersion"] == API_VERSION:
        parse(document)
    else:
        assert document["kind"] in ("Namespace", "Secret"), "examples add only these beside ours"


def test_examples_cover_every_kind() -> None:
    kinds = {doc["kind"] for _, doc in EXAMPLE_DOCUMENTS if doc["apiVersion"] == API_VERSION}
    assert kinds == {"Registry", "ModelTemplate", "ModelVersion", "Model"}


# ---------------------------------------------------------------------------------------------


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _delete(document: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[last]


@dataclass
class Bad:
    why: str
    kind: str
    name: str
    set: dict[str, Any] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    expect: str = ""
    #: Set for updates: the change is applied to a copy of the stored object.
    update: bool = False
    #: The schema cannot express the check (an untyped value): the operator makes it.
    by_operator: bool = False

    def build(self) -> tuple[dict[str, Any], dict[str, Any]]:
        original = example(self.kind, self.name)
        document = copy.deepcopy(original)
        for path, value in self.set.items():
            _set(document, path, value)
        for path in self.delete:
            _delete(document, path)
        return document, original


REG = ("Registry", "quay")
TPL = ("ModelTemplate", "custom-reranking-model-template")
MV = ("ModelVersion", "awesome-llm-1.1.0")
MDL = ("Model", "awesome-chat")
MLV = ("ModelVersion", "churn-classifier-2-1-0")
EXT = ("Model", "hosted-reranker")

HEX64 = "0ee461a3c655470beed8493558a0bf1943d289860bfdff2114af15874e53c310"

CATALOGUE = [
    # Registry
    Bad("a registry URL needs a scheme", *REG, {"spec.url": "quay.io"}, expect="URL"),
    Bad("a registry URL is not free text", *REG, {"spec.url": "not a url"}, expect="URL"),
    Bad("only oci and mlflow registries exist", *REG, {"spec.type": "s3"}, expect="s3"),
    Bad(
        "checks more often than every 10 s hammer the registry",
        *REG,
        {"spec.checkIntervalSeconds": 1},
        expect="10",
    ),
    Bad(
        "the check interval is a number",
        *REG,
        {"spec.checkIntervalSeconds": "300"},
        expect="checkIntervalSeconds",
    ),
    Bad(
        "Secret names are lowercase DNS names",
        *REG,
        {"spec.credentialsSecret": "Quay_Robot"},
        expect="object name",
    ),
    Bad(
        "a CA and skipping verification contradict",
        *REG,
        {"spec.tls": {"caSecret": "quay-ca", "insecureSkipVerify": True}},
        expect="contradict",
    ),
    Bad("a registry needs a URL", *REG, delete=("spec.url",), expect="url"),
    Bad(
        "cosign signs images, not MLflow model versions",
        *REG,
        {"spec.type": "mlflow", "spec.signatures": {"publicKeys": [{"secretName": "cosign-pub"}]}},
        expect="signatures apply to OCI images",
    ),
    Bad(
        "a signature policy trusts at least one key",
        *REG,
        {"spec.signatures": {"mode": "Enforce", "publicKeys": []}},
        expect="publicKeys",
    ),
    Bad(
        "signature modes are Enforce and Warn",
        *REG,
        {"spec.signatures": {"mode": "Audit", "publicKeys": [{"secretName": "cosign-pub"}]}},
        expect="Audit",
    ),
    # ModelTemplate
    Bad(
        "model types are a closed set",
        *TPL,
        {"spec.modelType": "TRANSLATION"},
        expect="TRANSLATION",
    ),
    Bad("endpoint types are upper case", *TPL, {"spec.endpointType": "sync"}, expect="sync"),
    Bad(
        "a model template needs a model type", *TPL, delete=("spec.modelType",), expect="modelType"
    ),
    Bad("negative GPUs", *TPL, {"spec.resources.gpus": -1}, expect="-1"),
    Bad("more GPUs than any node has", *TPL, {"spec.resources.gpus": 1000}, expect="1000"),
    Bad("GPU count is a number", *TPL, {"spec.resources.gpus": "one"}, expect="gpus"),
    Bad("a GPU type without GPUs", *TPL, {"spec.resources.gpus": 0}, expect="gpuType"),
    Bad(
        "minWorkers above maxWorkers",
        *TPL,
        {"spec.scaling.minWorkers": 3, "spec.scaling.maxWorkers": 1},
        expect="minWorkers",
    ),
    Bad(
        "zero maxWorkers serves nothing",
        *TPL,
        {"spec.scaling.maxWorkers": 0, "spec.scaling.minWorkers": 0},
        expect="0",
    ),
    Bad("perWorker must be positive", *TPL, {"spec.scaling.perWorker": 0}, expect="0"),
    Bad(
        "a typo in a field name is not silently dropped",
        *TPL,
        {"spec.scaling.minWorker": 1},
        expect="minWorker",
    ),
    Bad(
        "an image with both tag and digest",
        *TPL,
        {"spec.image.tag": "latest"},
        expect="exactly one of tag or digest",
    ),
    Bad(
        "an image with neither tag nor digest",
        *TPL,
        delete=("spec.image.digest",),
        expect="exactly one of tag or digest",
    ),
    Bad(
        "digests are lowercase hex",
        *TPL,
        {"spec.image.digest": "sha256:" + HEX64.upper()},
        expect="sha256",
    ),
    Bad("only sha256 digests", *TPL, {"spec.image.digest": "sha512:" + HEX64}, expect="sha256"),
    Bad(
        "repositories are lowercase paths",
        *TPL,
        {"spec.image.repository": "Egp-Test/Reranker"},
        expect="repository",
    ),
    Bad("memory is a quantity", *TPL, {"spec.resources.memory": "8 gigabytes"}, expect="quantity"),
    Bad("negative CPUs as a number", *TPL, {"spec.resources.cpus": -1}, expect="-1"),
    Bad("negative CPUs as a string", *TPL, {"spec.resources.cpus": "-500m"}, expect="quantity"),
    Bad(
        "parameter names are unique",
        *TPL,
        {"spec.parameters.1.name": "MODEL_BUCKET"},
        expect="MODEL_BUCKET",
    ),
    Bad(
        "parameter names are env var names",
        *TPL,
        {"spec.parameters.0.name": "model-bucket"},
        expect="environment variable",
    ),
    Bad(
        "parameter types are a closed set",
        *TPL,
        {"spec.parameters.0.type": "string"},
        expect="string",
    ),
    Bad(
        "a secret parameter has no default",
        *TPL,
        {"spec.parameters.0.type": "secret", "spec.parameters.0.default": "s/k"},
        expect="secret",
        by_operator=True,
    ),
    Bad(
        "a default is a scalar",
        *TPL,
        {"spec.parameters.0.default": ["a", "b"]},
        expect="default",
        by_operator=True,
    ),
    Bad(
        "env names are env var names",
        *TPL,
        {"spec.env": {"1DEVICE": "cuda"}},
        expect="environment variable",
    ),
    Bad(
        "a negative readiness delay", *TPL, {"spec.readiness.initialDelaySeconds": -5}, expect="-5"
    ),
    Bad("ports stop at 65535", *TPL, {"spec.port": 70000}, expect="70000"),
    Bad("probe paths start with /", *TPL, {"spec.readiness.path": "healthz"}, expect="path"),
    # ModelVersion
    Bad("versions are semantic versions", *MV, {"spec.version": "1.0"}, expect="semantic version"),
    Bad("no leading v in a version", *MV, {"spec.version": "v1.1.0"}, expect="semantic version"),
    Bad("leading zeros are not semver", *MV, {"spec.version": "01.1.0"}, expect="semantic version"),
    Bad("a truncated digest", *MV, {"spec.digest": "sha256:0ee461a3"}, expect="sha256"),
    Bad("a version needs a digest", *MV, delete=("spec.digest",), expect="digest"),
    Bad("model names are lowercase", *MV, {"spec.model": "Awesome LLM"}, expect="model name"),
    Bad(
        "a published version cannot be re-pointed",
        *MV,
        {"spec.digest": "sha256:" + "1" * 64},
        expect="immutable",
        update=True,
    ),
    Bad(
        "a published version cannot be re-described",
        *MV,
        {"spec.description": "edited"},
        expect="immutable",
        update=True,
    ),
    Bad(
        "an MLflow version is pinned by number or by alias, not both",
        *MLV,
        {"spec.mlflow.version": "3"},
        expect="exactly one of mlflow.version and mlflow.alias",
    ),
    Bad(
        "an MLflow version needs a number or an alias",
        *MLV,
        delete=("spec.mlflow.alias",),
        expect="exactly one of mlflow.version and mlflow.alias",
    ),
    Bad(
        "a version is an image or an MLflow version, not both",
        *MLV,
        {"spec.repository": "acme/churn", "spec.digest": "sha256:" + HEX64},
        expect="exactly one of",
    ),
    Bad(
        "a version is weights or an MLflow version, not both",
        *MLV,
        {"spec.weights": {"repository": "acme/churn", "digest": "sha256:" + HEX64}},
        expect="exactly one of",
    ),
    Bad(
        "a version is weights or an image, not both",
        "ModelVersion",
        "iris-weights-1-0-0",
        {"spec.repository": "acme/iris", "spec.digest": "sha256:" + HEX64},
        expect="exactly one of",
    ),
    Bad(
        "weights are pinned by digest",
        "ModelVersion",
        "iris-weights-1-0-0",
        delete=("spec.weights.digest",),
        expect="digest",
    ),
    Bad(
        "a weights mount path is absolute, without '..'",
        "ModelTemplate",
        "mlflow-weights",
        {"spec.weights.mountPath": "/models/../etc"},
        expect="absolute path",
    ),
    Bad(
        "MLflow version numbers are numbers",
        *MLV,
        {"spec.mlflow.version": "v3"},
        delete=("spec.mlflow.alias",),
        expect="MLflow version number",
    ),
    Bad(
        "MLflow model names cannot hold a slash",
        *MLV,
        {"spec.mlflow.name": "team/churn"},
        expect="registered model name",
    ),
    # Probes
    Bad(
        "a reranking probe needs chunks",
        *TPL,
        delete=("spec.probe.request.chunks",),
        expect="chunks",
    ),
    Bad(
        "a probe's chunks are a list of strings",
        *TPL,
        {"spec.probe.request.chunks": "Asia is the largest continent."},
        expect="chunks",
    ),
    Bad(
        "a probe is a request",
        *TPL,
        delete=("spec.probe.request",),
        expect="request",
    ),
    Bad(
        "an MLflow probe sends its rows in one of MLflow's formats",
        *TPL,
        {"spec.probe": {"protocol": "MLflow", "request": {"rows": [[5.1, 3.5, 1.4, 0.2]]}}},
        expect="exactly one of",
        by_operator=True,
    ),
    Bad(
        "an MLflow probe sends one format, not two",
        *TPL,
        {
            "spec.probe": {
                "protocol": "MLflow",
                "request": {"instances": [[1, 2]], "inputs": [[1, 2]]},
            }
        },
        expect="exactly one of",
        by_operator=True,
    ),
    Bad(
        "an Open Inference probe names its model",
        *TPL,
        {
            "spec.probe": {
                "protocol": "OpenInference",
                "request": {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]
                },
            }
        },
        expect="model",
    ),
    Bad(
        "a DEEPaaS probe does not choose its path",
        *TPL,
        {
            "spec.probe": {
                "protocol": "DEEPaaS",
                "path": "/predict",
                "request": {"sepal_length": 5.1},
            }
        },
        expect="path",
    ),
    Bad(
        "probes speak a protocol modelyard knows",
        *TPL,
        {"spec.probe": {"protocol": "Triton", "request": {"inputs": []}}},
        expect="protocol",
    ),
    Bad(
        "a probe waits at least a second",
        *TPL,
        {"spec.probe.timeoutSeconds": 0},
        expect="timeoutSeconds",
    ),
    Bad(
        "a chat probe's temperature is between 0 and 1",
        *TPL,
        {
            "spec.modelType": "CHAT_COMPLETION",
            "spec.probe.request": {
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 7,
            },
        },
        expect="temperature",
    ),
    Bad(
        "a chat probe's messages have a known role",
        *TPL,
        {
            "spec.modelType": "CHAT_COMPLETION",
            "spec.probe.request": {"messages": [{"role": "robot", "content": "hi"}]},
        },
        expect="role",
        by_operator=True,
    ),
    # External models
    Bad(
        "a Model is run here or external, not both",
        *EXT,
        {"spec.template": "custom-reranking-model-template"},
        expect="exactly one of template",
    ),
    Bad(
        "an external model takes no version",
        *EXT,
        {"spec.version": {"model": "awesome-llm", "version": "1.1.0"}},
        expect="no version",
    ),
    Bad("an external model needs a URL", *EXT, delete=("spec.external.url",), expect="url"),
    Bad(
        "an external model's URL carries no password (status shows the URL)",
        *EXT,
        {"spec.external.url": "https://bot:hunter2@rerank.example.com/v1"},
        expect="not in the URL",
    ),
    Bad(
        "an external model's URL has a scheme",
        *EXT,
        {"spec.external.url": "rerank.example.com"},
        expect="URL",
    ),
    Bad(
        "an external reranker's probe needs a query",
        *EXT,
        delete=("spec.external.probe.request.query",),
        expect="query",
    ),
    Bad(
        "a credentials header is a header name",
        *EXT,
        {"spec.external.credentials.header": "X Api Key"},
        expect="header name",
    ),
    # Model
    Bad("a Model needs a template", *MDL, delete=("spec.template",), expect="template"),
    Bad(
        "template names are object names",
        *MDL,
        {"spec.template": "My_Template"},
        expect="object name",
    ),
    Bad(
        "parameter values are not lists",
        *MDL,
        {"spec.parameters.MAX_NUM_SEQS": [1, 2]},
        expect="string",
        by_operator=True,
    ),
    Bad(
        "parameter values are not objects",
        *MDL,
        {"spec.parameters.MAX_NUM_SEQS": {"a": 1}},
        expect="string",
        by_operator=True,
    ),
    Bad(
        "parameter names are env var names",
        *MDL,
        {"spec.parameters.bad-key": "x"},
        expect="environment variable",
        by_operator=True,
    ),
    Bad("Model names become Service names", *MDL, {"metadata.name": "1st-model"}, expect="Service"),
    Bad("Service names stop at 63 characters", *MDL, {"metadata.name": "m" * 64}, expect="Service"),
    Bad(
        "a scaling override with min above max",
        *MDL,
        {"spec.scaling": {"minWorkers": 5, "maxWorkers": 2}},
        expect="minWorkers",
    ),
    Bad(
        "a version range is not a shell command",
        *MDL,
        {"spec.version.version": "1.0.0; rm -rf /"},
        expect="range",
    ),
    Bad("a version selector names its model", *MDL, delete=("spec.version.model",), expect="model"),
    Bad(
        "a Model may not take the name of another's canary",
        *MDL,
        {"metadata.name": "awesome-chat-canary"},
        expect="canary",
    ),
    Bad(
        "only Rolling and Canary rollouts exist",
        *MDL,
        {"spec.rollout": {"strategy": "BlueGreen"}},
        expect="BlueGreen",
    ),
    Bad(
        "a canary has at least one worker",
        *TPL,
        {"spec.rollout": {"strategy": "Canary", "canaryWorkers": 0}},
        expect="canaryWorkers",
    ),
    Bad(
        "an external model has no rollout",
        *EXT,
        {"spec.rollout": {"strategy": "Canary"}},
        expect="rollout",
    ),
]


def test_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 30
    assert {bad.kind for bad in CATALOGUE} == {"Registry", "ModelTemplate", "ModelVersion", "Model"}


AT_APPLY = [bad for bad in CATALOGUE if not bad.by_operator]
IN_STATUS = [bad for bad in CATALOGUE if bad.by_operator]


@pytest.mark.parametrize("bad", AT_APPLY, ids=[bad.why for bad in AT_APPLY])
def test_bad_manifest_is_refused_by_the_api_server(server: Server, bad: Bad) -> None:
    document, original = bad.build()
    if bad.update:
        original["metadata"]["name"] = document["metadata"]["name"] = f"update-{id(bad)}"
        assert server.refusal(original, dry_run=False) is None
    else:
        if "metadata.name" not in bad.set:
            document["metadata"]["name"] = f"new-{id(bad)}"
        created = server.create_refusal(document)
        assert created is not None, f"created although {bad.why}"
        assert bad.expect.lower() in created.lower(), created
    message = server.refusal(document)
    assert message is not None, f"applied although {bad.why}"
    assert bad.expect.lower() in message.lower(), message


@pytest.mark.parametrize("bad", IN_STATUS, ids=[bad.why for bad in IN_STATUS])
def test_what_the_schema_cannot_see_is_left_to_the_operator(server: Server, bad: Bad) -> None:
    """Accepted at apply time (the value is untyped), so the operator's models must refuse it;
    tests/test_bad_input.py shows the refusal reaching the object's status."""
    document, _ = bad.build()
    assert server.refusal(document) is None
    with pytest.raises((ValidationError, ValueError)) as refused:
        parse(document)
    assert bad.expect.lower() in str(refused.value).lower()


@pytest.mark.parametrize(
    "bad", [b for b in CATALOGUE if not b.update], ids=[b.why for b in CATALOGUE if not b.update]
)
def test_bad_manifest_is_refused_by_the_operator_models(bad: Bad) -> None:
    document, _ = bad.build()
    with pytest.raises((ValidationError, ValueError)) as refused:
        parse(document)
    assert bad.expect.lower() in str(refused.value).lower()


def test_unchanged_modelversion_update_is_accepted(server: Server) -> None:
    original = example(*MV)
    original["metadata"]["name"] = "relabelled"
    assert server.refusal(original, dry_run=False) is None
    updated = copy.deepcopy(original)
    updated["metadata"]["labels"] = {"team": "ml"}
    assert server.refusal(updated, dry_run=False) is None
    status = {"status": {"image": "quay.io/acme/awesome-llm@sha256:" + HEX64}}
    server.api.patch(
        "modelyard.dev/v1alpha1/modelversions",
        NAMESPACE,
        "relabelled",
        status,
        subresource="status",
    )


@pytest.mark.parametrize(
    "version",
    ["1.0.0", "1.0.0-initially-released-version-of-our-awesome-model", "2.10.3-rc.1+build.5"],
)
def test_semantic_versions_with_suffixes_are_accepted(server: Server, version: str) -> None:
    document = example(*MV)
    document["metadata"]["name"] = "semver-" + version.replace("+", "-").replace(".", "-")[
        :40
    ].strip("-")
    document["spec"]["version"] = version
    assert server.refusal(document) is None
    parse(document)


def test_parameter_values_keep_their_types() -> None:
    model = parse(example("Model", "docs-embedder"))
    assert model.spec.parameters == {"BATCH_SIZE": 64}
    assert type(model.spec.parameters["BATCH_SIZE"]) is int
    template = parse(example("ModelTemplate", "cpu-embedding"))
    defaults = {p.name: p.default for p in template.spec.parameters}
    assert defaults == {"MODEL_NAME": "all-MiniLM-L6-v2", "BATCH_SIZE": 32, "NORMALIZE": True}
    assert type(defaults["NORMALIZE"]) is bool


@pytest.mark.parametrize(
    "text",
    [
        "1.0.0",
        "0.0.0",
        "10.20.30",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-0.3.7",
        "1.0.0-x.7.z.92",
        "1.0.0-initially-released-version-of-our-awesome-model",
        "1.0.0+20130313144700",
        "1.0.0-beta+exp.sha.5114f85",
        "1.0.0-rc.1+build.1",
        "1.0",
        "1",
        "01.1.0",
        "1.01.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "v1.0.0",
        "1.0.0.0",
        "1.0.0-alpha..1",
        " 1.0.0",
        "1.0.0-rc.1+build..1",
        "-1.0.0",
    ],
)
def test_the_version_rule_is_exactly_semver(text: str) -> None:
    """The regex both gatekeepers use agrees with the semver library on every case."""
    assert formats.matches(formats.SEMVER, text) == semver.Version.is_valid(text)

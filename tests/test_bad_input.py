"""Fifty-odd bad objects at once, through the real operator: each gets its own reason.

The CRDs are relaxed for this test — the situation of a cluster with an older or hand-edited
CRD, or of objects written around the schema — so everything the schema would refuse reaches
the operator here, next to everything only the operator can judge (a missing template, an
unknown GPU type, a Secret without the expected key). Each bad object must end with Ready=False
and a specific reason; meanwhile a good Model stays READY and nothing the operator had created
is lost, even when its template is made invalid under it. (The same kinds of mistakes are
refused at apply time by the CRDs: tests/test_schema.py.)
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from support.cluster import Cluster
from support.controllers import (
    CONSENT,
    DEPLOYMENTS,
    MODELS,
    PLURALS,
    TEMPLATES,
    apply_documents,
    condition,
    run_pods,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually

#: Where the manifests below say they live; each test applies them into its own namespace.
NS = "ml-team"
HUGE = "x" * 70_000


def named(document: dict[str, Any], name: str, **spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["metadata"]["name"] = name
    for path, value in spec.items():
        node = document["spec"]
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return document


def registry(name: str, **spec: Any) -> dict[str, Any]:
    base = example("Registry", "dockerhub")
    base["spec"]["url"] = "http://127.0.0.1:9"
    return named(base, name, **spec)


def template(name: str, **spec: Any) -> dict[str, Any]:
    return named(example("ModelTemplate", "cpu-embedding"), name, **spec)


def model(name: str, **spec: Any) -> dict[str, Any]:
    return named(example("Model", "docs-embedder"), name, **spec)


def version(name: str, **spec: Any) -> dict[str, Any]:
    return named(
        example("ModelVersion", "awesome-llm-1.1.0"), name, **{"registry": "dockerhub", **spec}
    )


def secret(name: str, kind: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "data": {
            k.replace("_", "."): base64.b64encode(v.encode()).decode() for k, v in data.items()
        },
    }


#: (why, documents to apply, (kind, name) that must explain it, expected Ready reason)
CATALOGUE: list[tuple[str, list[dict[str, Any]], tuple[str, str], str]] = [
    # Models
    (
        "unknown template",
        [model("m-no-template", template="nope")],
        ("Model", "m-no-template"),
        "TemplateNotFound",
    ),
    (
        "required parameter missing",
        [
            model("m-missing", template="t-required", parameters={}),
            template("t-required", parameters=[{"name": "MODEL_PATH", "required": True}]),
        ],
        ("Model", "m-missing"),
        "ParametersInvalid",
    ),
    (
        "unknown parameter",
        [model("m-extra", parameters={"NOT_IN_SCHEMA": "x"})],
        ("Model", "m-extra"),
        "ParametersInvalid",
    ),
    (
        "int parameter given text",
        [model("m-int", parameters={"BATCH_SIZE": "many"})],
        ("Model", "m-int"),
        "ParametersInvalid",
    ),
    (
        "bool parameter given text",
        [model("m-bool", parameters={"NORMALIZE": "perhaps"})],
        ("Model", "m-bool"),
        "ParametersInvalid",
    ),
    (
        "int parameter given a float",
        [model("m-float", parameters={"BATCH_SIZE": 2.5})],
        ("Model", "m-float"),
        "ParametersInvalid",
    ),
    (
        "parameter value is a list",
        [model("m-list", parameters={"BATCH_SIZE": [1, 2]})],
        ("Model", "m-list"),
        "InvalidSpec",
    ),
    (
        "parameter value is an object",
        [model("m-object", parameters={"MODEL_NAME": {"a": 1}})],
        ("Model", "m-object"),
        "InvalidSpec",
    ),
    (
        "parameter name not an env name",
        [model("m-envname", parameters={"bad-name": "x"})],
        ("Model", "m-envname"),
        "InvalidSpec",
    ),
    (
        "scaling override min above max",
        [model("m-scaling", scaling={"minWorkers": 9})],
        ("Model", "m-scaling"),
        "InvalidScaling",
    ),
    (
        "override min above max in itself",
        [model("m-scaling2", scaling={"minWorkers": 5, "maxWorkers": 2})],
        ("Model", "m-scaling2"),
        "InvalidSpec",
    ),
    (
        "template field of the wrong type",
        [model("m-type", template=5)],
        ("Model", "m-type"),
        "InvalidSpec",
    ),
    (
        "parameters of the wrong type",
        [model("m-params-type", parameters="BATCH_SIZE=1")],
        ("Model", "m-params-type"),
        "InvalidSpec",
    ),
    (
        "unknown field in spec",
        [model("m-unknown-field", replicas=3)],
        ("Model", "m-unknown-field"),
        "InvalidSpec",
    ),
    # (A name that is not even an object name — "mödel-ünïcode" — is refused by the API server
    # whatever the CRD says: no operator ever sees one.)
    ("name longer than a Service name", [model("m" * 70)], ("Model", "m" * 70), "InvalidSpec"),
    ("name starting with a digit", [model("9lives")], ("Model", "9lives"), "InvalidSpec"),
    (
        "huge parameter value",
        [model("m-huge", parameters={"MODEL_NAME": HUGE})],
        ("Model", "m-huge"),
        "Deploying",
    ),
    (
        "unknown model in version selector",
        [model("m-no-version", version={"model": "ghost", "version": "1.0.0"})],
        ("Model", "m-no-version"),
        "VersionNotFound",
    ),
    (
        "version range matching nothing",
        [
            model("m-range", version={"model": "awesome-llm", "version": ">=9.0.0"}),
            version("v-for-range", version="1.1.0"),
        ],
        ("Model", "m-range"),
        "VersionNotFound",
    ),
    (
        "version selector that is not a range",
        [model("m-bad-range", version={"model": "awesome-llm", "version": ">>1"})],
        ("Model", "m-bad-range"),
        "InvalidSpec",
    ),
    (
        "version not verified",
        [
            model(
                "m-unverified",
                template="t-noimage",
                version={"model": "unverified", "version": "1.0.0"},
            ),
            template("t-noimage", image=None),
            version("v-unverified", model="unverified", version="1.0.0", registry="r-down"),
        ],
        ("Model", "m-unverified"),
        "VersionNotReady",
    ),
    (
        "template without image and no version",
        [model("m-needs-version", template="t-noimage")],
        ("Model", "m-needs-version"),
        "VersionRequired",
    ),
    (
        "template with unknown GPU type",
        [
            model("m-gpu", template="t-gpu"),
            template("t-gpu", resources={"gpus": 1, "gpuType": "nvidia-volta-v100"}),
        ],
        ("Model", "m-gpu"),
        "UnknownGpuType",
    ),
    (
        "template registry missing",
        [
            model("m-registry", template="t-registry"),
            template(
                "t-registry",
                image={"registry": "ghost", "repository": "a/b", "digest": "sha256:" + "1" * 64},
            ),
        ],
        ("Model", "m-registry"),
        "RegistryNotFound",
    ),
    (
        "template tag cannot be resolved",
        [
            model("m-tag", template="t-tag"),
            template("t-tag", image={"registry": "r-down", "repository": "a/b", "tag": "1.0"}),
        ],
        ("Model", "m-tag"),
        "ImageUnresolved",
    ),
    (
        "template invalid",
        [model("m-template-invalid", template="t-invalid")],
        ("Model", "m-template-invalid"),
        "TemplateNotReady",
    ),
    # ModelTemplates
    ("GPU type unknown", [], ("ModelTemplate", "t-gpu"), "UnknownGpuType"),
    (
        "negative GPUs",
        [template("t-invalid", resources={"gpus": -1})],
        ("ModelTemplate", "t-invalid"),
        "InvalidSpec",
    ),
    (
        "huge GPU count",
        [template("t-huge-gpus", resources={"gpus": 10_000})],
        ("ModelTemplate", "t-huge-gpus"),
        "InvalidSpec",
    ),
    (
        "min workers above max",
        [template("t-minmax", scaling={"minWorkers": 4, "maxWorkers": 1})],
        ("ModelTemplate", "t-minmax"),
        "InvalidSpec",
    ),
    (
        "huge max workers",
        [template("t-huge-workers", scaling={"minWorkers": 1, "maxWorkers": 10**9})],
        ("ModelTemplate", "t-huge-workers"),
        "InvalidSpec",
    ),
    (
        "unknown model type",
        [template("t-type", modelType="TRANSLATION")],
        ("ModelTemplate", "t-type"),
        "InvalidSpec",
    ),
    (
        "image with tag and digest",
        [
            template(
                "t-both",
                image={
                    "registry": "dockerhub",
                    "repository": "a/b",
                    "tag": "1",
                    "digest": "sha256:" + "1" * 64,
                },
            )
        ],
        ("ModelTemplate", "t-both"),
        "InvalidSpec",
    ),
    (
        "malformed digest",
        [
            template(
                "t-digest",
                image={"registry": "dockerhub", "repository": "a/b", "digest": "sha256:XYZ"},
            )
        ],
        ("ModelTemplate", "t-digest"),
        "InvalidSpec",
    ),
    (
        "duplicate parameter names",
        [template("t-dup", parameters=[{"name": "A"}, {"name": "A"}])],
        ("ModelTemplate", "t-dup"),
        "InvalidSpec",
    ),
    (
        "secret parameter with a default",
        [
            template(
                "t-secret-default",
                parameters=[{"name": "TOKEN", "type": "secret", "default": "s/k"}],
            )
        ],
        ("ModelTemplate", "t-secret-default"),
        "InvalidSpec",
    ),
    (
        "required parameter with a default",
        [
            template(
                "t-required-default", parameters=[{"name": "A", "required": True, "default": "x"}]
            )
        ],
        ("ModelTemplate", "t-required-default"),
        "InvalidSpec",
    ),
    (
        "default of the wrong type",
        [template("t-default-type", parameters=[{"name": "N", "type": "int", "default": "many"}])],
        ("ModelTemplate", "t-default-type"),
        "InvalidSpec",
    ),
    (
        "startup budget shorter than the readiness delay",
        [template("t-startup", startupTimeoutSeconds=30, readiness={"initialDelaySeconds": 300})],
        ("ModelTemplate", "t-startup"),
        "InvalidSpec",
    ),
    (
        "memory that is not a quantity",
        [template("t-memory", resources={"memory": "lots"})],
        ("ModelTemplate", "t-memory"),
        "InvalidSpec",
    ),
    ("tag that does not resolve", [], ("ModelTemplate", "t-tag"), "ImageUnresolved"),
    # ModelVersions
    (
        "version that is not semver",
        [version("v-semver", version="1.0")],
        ("ModelVersion", "v-semver"),
        "InvalidSpec",
    ),
    (
        "digest that is not sha256",
        [version("v-digest", digest="md5:abc")],
        ("ModelVersion", "v-digest"),
        "InvalidSpec",
    ),
    (
        "registry that does not exist",
        [version("v-registry", registry="ghost", version="3.0.0")],
        ("ModelVersion", "v-registry"),
        "RegistryNotReady",
    ),
    ("registry that does not answer", [], ("ModelVersion", "v-unverified"), "RegistryNotReady"),
    (
        "same model and version twice",
        [
            version("v-first", version="4.0.0", registry="r-down"),
            version("v-second", version="4.0.0", registry="r-down"),
        ],
        ("ModelVersion", "v-second"),
        "DuplicateVersion",
    ),
    # Registries
    (
        "URL that is not a URL",
        [registry("r-url", url="quay.io/acme")],
        ("Registry", "r-url"),
        "InvalidSpec",
    ),
    (
        "unknown registry type",
        [registry("r-type", type="s3")],
        ("Registry", "r-type"),
        "InvalidSpec",
    ),
    (
        "check interval of one second",
        [registry("r-interval", checkIntervalSeconds=1)],
        ("Registry", "r-interval"),
        "InvalidSpec",
    ),
    (
        "CA and skip-verify together",
        [registry("r-tls", tls={"caSecret": "ca", "insecureSkipVerify": True})],
        ("Registry", "r-tls"),
        "InvalidSpec",
    ),
    # Probes and external models
    (
        "a probe request in another type's shape",
        [template("t-probe-shape", probe={"request": {"query": "q", "chunks": ["a"]}})],
        ("ModelTemplate", "t-probe-shape"),
        "InvalidSpec",
    ),
    (
        "a chat probe with a message of no known role",
        [
            template(
                "t-probe-role",
                modelType="CHAT_COMPLETION",
                probe={"request": {"messages": [{"role": "robot", "content": "hi"}]}},
            )
        ],
        ("ModelTemplate", "t-probe-role"),
        "InvalidSpec",
    ),
    (
        "a Model both run here and external",
        [model("m-both", external={"url": "http://127.0.0.1:9", "modelType": "CUSTOM"})],
        ("Model", "m-both"),
        "InvalidSpec",
    ),
    (
        "an external model whose credentials Secret is missing",
        [
            model(
                "m-ext-secret",
                template=None,
                parameters=None,
                external={
                    "url": "http://127.0.0.1:9",
                    "modelType": "CUSTOM",
                    "credentials": {"secretName": "ghost-key"},
                },
            )
        ],
        ("Model", "m-ext-secret"),
        "SecretNotFound",
    ),
    (
        "an external model nobody answers at",
        [
            model(
                "m-ext-closed",
                template=None,
                parameters=None,
                external={"url": "http://127.0.0.1:9", "modelType": "CUSTOM"},
            )
        ],
        ("Model", "m-ext-closed"),
        "EndpointUnreachable",
    ),
    (
        "credentials Secret missing",
        [registry("r-no-secret", credentialsSecret="ghost")],
        ("Registry", "r-no-secret"),
        "SecretNotFound",
    ),
    (
        "Secret without the expected key",
        [
            registry("r-bad-secret", credentialsSecret="wrong-keys"),
            secret("wrong-keys", "Opaque", user="robot"),
        ],
        ("Registry", "r-bad-secret"),
        "SecretInvalid",
    ),
    (
        "basic-auth Secret without a password",
        [
            registry("r-no-password", credentialsSecret="half"),
            secret("half", "kubernetes.io/basic-auth", username="robot"),
        ],
        ("Registry", "r-no-password"),
        "SecretInvalid",
    ),
    (
        "CA Secret without ca.crt",
        [
            registry("r-no-ca", url="https://127.0.0.1:9", tls={"caSecret": "no-ca"}),
            secret("no-ca", "Opaque", tls_crt="x"),
        ],
        ("Registry", "r-no-ca"),
        "SecretInvalid",
    ),
    ("registry that does not answer", [registry("r-down")], ("Registry", "r-down"), "Unreachable"),
]


def reason(cluster: Cluster, kind: str, name: str) -> str | None:
    return condition(cluster.get(PLURALS[kind], cluster.namespace, name)).get("reason")


async def test_every_bad_object_gets_its_own_reason_and_nothing_good_is_lost(
    relaxed_crds: None, cluster: Cluster, operator: OperatorProcess
) -> None:
    assert len(CATALOGUE) >= 50
    # Something good first, running, that must survive everything below.
    good = [
        registry("dockerhub"),
        template("cpu-embedding"),
        model("docs-embedder"),
        template("t-invalid"),
    ]
    await apply_documents(cluster, [*good, model("survivor", template="t-invalid")])
    for name in ("docs-embedder", "survivor"):
        await eventually(
            lambda n=name: cluster.get(DEPLOYMENTS, cluster.namespace, n),
            30,
            f"Deployment {name}",
            operator,
        )
        # Played kubelet: the subject is bad input; good Models only need to be READY.
        await run_pods(cluster, cluster.namespace, name)
    survivor_before = cluster.get(DEPLOYMENTS, cluster.namespace, "survivor")

    seen: set[tuple[str, str]] = {(d["kind"], d["metadata"]["name"]) for d in good}
    batch = []
    for _, documents, _, _ in CATALOGUE:
        for document in documents:
            key = (document["kind"], document["metadata"]["name"])
            if key not in seen:
                seen.add(key)
                batch.append(document)
    await apply_documents(cluster, batch)
    # A template made invalid while a Model uses it.
    await cluster.patch(
        TEMPLATES,
        cluster.namespace,
        "t-invalid",
        {"spec": {"resources": {"gpus": -1}}},
        manager="kubectl",
    )

    for why, _, (kind, name), expected in CATALOGUE:
        await eventually(
            lambda k=kind, n=name, e=expected: reason(cluster, k, n) == e,
            30,
            f"{why}: {kind} {name} → {expected}",
            operator,
        )
        if expected != "Deploying":
            assert (
                condition(cluster.get(PLURALS[kind], cluster.namespace, name))["status"] != "True"
            ), why
            assert condition(cluster.get(PLURALS[kind], cluster.namespace, name))["message"], why

    # The operator kept serving: the good Model is still READY, and nothing it made is gone.
    assert (cluster.get(MODELS, cluster.namespace, "docs-embedder")["status"])["state"] == "READY"
    assert reason(cluster, "Model", "survivor") == "TemplateNotReady"
    assert (
        cluster.get(DEPLOYMENTS, cluster.namespace, "survivor")["spec"] == survivor_before["spec"]
    ), "a bad edit took nothing away"
    assert operator.process is not None and operator.process.poll() is None
    assert "Traceback" not in operator.output

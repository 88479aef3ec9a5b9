"""The operator is never a confused deputy: what a Model writer cannot do or reach directly, they
cannot do or reach through modelyard.

Secrets are used only with their owner's consent (the `modelyard.dev/use=true` label), and the
operator never holds the others; an external Model's URL is checked against the operator's
egress policy before anything is sent; credentials never follow a redirect to another origin.
All against the real API server, with real HTTP servers on loopback.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster
from support.controllers import (
    CONSENT,
    DEPLOYMENTS,
    MODELS,
    REGISTRIES,
    SECRETS,
    apply_documents,
    condition,
)
from support.examples import example
from support.model_server import Behaviour, ModelServer
from support.operator_process import OperatorProcess, eventually

EXTERNAL = "hosted-reranker"
TOKEN = "other-teams-token-4Hq9"


@pytest.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path),
        tmp_path,
        config={"probes": {"intervalSeconds": 2, "retrySeconds": 1}},
    ).start()
    yield process
    await process.stop()


def token_secret(labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "other-team-token", **({"labels": labels} if labels else {})},
        "type": "Opaque",
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
    }


def external_model(url: str, secret: str | None = "other-team-token") -> dict[str, Any]:
    model = example("Model", EXTERNAL)
    external = model["spec"]["external"]
    external["url"] = url
    external["probe"]["timeoutSeconds"] = 2
    if secret:
        external["credentials"] = {"secretName": secret}
    else:
        external.pop("credentials", None)
    return model


def ready(cluster: Cluster, name: str = EXTERNAL) -> dict[str, Any]:
    return condition(cluster.get(MODELS, cluster.namespace, name))


async def not_permitted(cluster: Cluster, operator: OperatorProcess) -> None:
    await eventually(
        lambda: ready(cluster).get("reason") == "EndpointNotPermitted",
        20,
        "EndpointNotPermitted",
        operator,
    )


async def test_a_secret_is_used_only_once_its_owner_labels_it(
    cluster: Cluster, operator: OperatorProcess, server: ModelServer
) -> None:
    """A Model writer names another team's Secret for their own server: refused, and the
    server hears nothing, not even a health check. The owner labels it: then it is used."""
    server.behaviour = Behaviour(token=TOKEN)
    await apply_documents(
        cluster, [token_secret(), external_model(f"http://127.0.0.1:{server.port}/v1")]
    )
    await eventually(
        lambda: ready(cluster).get("reason") == "SecretNotPermitted", 20, "refused", operator
    )
    found = cluster.get(MODELS, cluster.namespace, EXTERNAL)
    assert found is not None and found["status"]["state"] == "FAILED"
    assert "modelyard.dev/use=true" in ready(cluster)["message"]
    assert condition(found, "Stalled")["reason"] == "SecretNotPermitted"
    assert server.received == []

    await cluster.patch(
        SECRETS, cluster.namespace, "other-team-token", {"metadata": {"labels": CONSENT}}
    )
    await eventually(lambda: ready(cluster).get("reason") == "Answering", 20, "used", operator)
    assert server.posts()[-1].headers.get("Authorization") == f"Bearer {TOKEN}"


async def test_a_registry_and_a_secret_parameter_need_consent_too(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    ns = cluster.namespace
    registry = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "private"},
        "spec": {"url": "http://127.0.0.1:9", "credentialsSecret": "other-team-token"},
    }
    await apply_documents(cluster, [token_secret(), registry])
    await eventually(
        lambda: (
            condition(cluster.get(REGISTRIES, ns, "private")).get("reason") == "SecretNotPermitted"
        ),
        20,
        "the Registry refuses the Secret",
        operator,
    )
    # A secret parameter becomes a secretKeyRef in a pod the Model's writer controls.
    template = example("ModelTemplate", "chat-h100")
    model = example("Model", "awesome-chat")
    secret_parameters = [
        p["name"] for p in template["spec"]["parameters"] if p.get("type") == "secret"
    ]
    assert secret_parameters, "the example template has a secret parameter"
    model["spec"]["parameters"][secret_parameters[0]] = "other-team-token/token"
    await apply_documents(cluster, [template, model])
    name = model["metadata"]["name"]
    await eventually(
        lambda: (
            condition(cluster.get(MODELS, ns, name), "ParametersValid").get("reason")
            == "SecretNotPermitted"
        ),
        20,
        "the parameter refused",
        operator,
    )
    assert cluster.get(DEPLOYMENTS, ns, name) is None


async def test_unrelated_secrets_never_reach_the_operator(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """Every list and watch of Secrets carries the consent label selector: the cluster's
    other Secrets (Helm releases, tokens) are never sent to the operator, so they cost it no
    memory and no passes, however many there are."""
    await apply_documents(
        cluster,
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"helm-release-{i}"},
                "data": {"release": base64.b64encode(b"x" * 8192).decode()},
            }
            for i in range(50)
        ],
    )
    await eventually(
        lambda: any("/secrets" in s.path and s.method == "GET" for s in cluster.served),
        20,
        "the operator's Secret watch",
        operator,
    )
    reads = [s for s in cluster.served if s.path.split("?")[0].endswith("/secrets")]
    assert reads
    for request in reads:
        assert request.query.get("labelSelector") == "modelyard.dev/use=true", request


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "denied range 169.254.0.0/16"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "denied range fd00:ec2::/32"),
    ],
)
async def test_an_external_url_outside_the_egress_policy_is_never_asked(
    cluster: Cluster, operator: OperatorProcess, url: str, why: str
) -> None:
    await apply_documents(cluster, [external_model(url, secret=None)])
    await not_permitted(cluster, operator)
    assert why in ready(cluster)["message"], ready(cluster)


async def test_the_api_server_is_never_an_external_model(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """The operator's own API server, as its kubeconfig names it: probing it would tell a
    Model writer what the operator's credentials can see."""
    await apply_documents(cluster, [external_model(cluster.url, secret=None)])
    await not_permitted(cluster, operator)
    assert "API server" in ready(cluster)["message"]


async def test_credentials_never_follow_a_redirect_to_another_origin(
    cluster: Cluster, operator: OperatorProcess, server: ModelServer
) -> None:
    elsewhere = ModelServer().start()
    try:
        server.behaviour = Behaviour(redirect_to=f"http://127.0.0.1:{elsewhere.port}")
        await apply_documents(
            cluster,
            [token_secret(CONSENT), external_model(f"http://127.0.0.1:{server.port}/v1")],
        )
        await not_permitted(cluster, operator)
        assert "another origin" in ready(cluster)["message"]
        assert server.received and elsewhere.received == []
    finally:
        elsewhere.stop()

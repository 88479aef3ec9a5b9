"""The operator is never a confused deputy: what a Model writer cannot do or reach directly, they
cannot do or reach through modelyard.

Secrets are used only with their owner's consent (the `modelyard.dev/use=true` label), and the
operator never holds the others; an external Model's URL is checked against the operator's
egress policy before anything is sent; credentials never follow a redirect to another origin.
All against the real API server, with real HTTP servers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
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
    events_for,
)
from support.examples import example
from support.model_server import Behaviour, ModelServer
from support.operator_process import OperatorProcess, eventually
from test_operator import embedding_documents

EXTERNAL = "hosted-reranker"
CONSENT_KEY = next(iter(CONSENT))
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


def secret_refs(cluster: Cluster, name: str) -> list[str]:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, name) or {}
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        v["valueFrom"]["secretKeyRef"]["name"]
        for c in pod.get("containers") or []
        for v in c.get("env") or []
        if "secretKeyRef" in (v.get("valueFrom") or {})
    ]


async def test_taking_consent_back_stops_the_workers_that_read_the_secret(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """A Model runs with a secret parameter: its pods read the Secret (a secretKeyRef), and
    every new pod reads it as it is then. Its owner takes the label off, then rotates the value:
    no pod of modelyard's may read it any more, so the workers go, and the Model says why. The
    label back: the workers come back. A Secret deleted and created again (how some tools rotate)
    stops nothing: no pod can read a Secret that is not there."""
    ns = cluster.namespace
    documents = embedding_documents()
    template = documents[1]
    template["spec"]["parameters"].append(
        {"name": "HF_TOKEN", "type": "secret", "description": "a token", "required": True}
    )
    model = documents[2]
    model["spec"]["parameters"]["HF_TOKEN"] = "other-team-token/token"
    await apply_documents(cluster, [token_secret(CONSENT), *documents])
    name = model["metadata"]["name"]
    await eventually(
        lambda: secret_refs(cluster, name) == ["other-team-token"], 20, "the workers", operator
    )

    await cluster.patch(
        SECRETS, ns, "other-team-token", {"metadata": {"labels": {CONSENT_KEY: None}}}
    )
    await cluster.gone(DEPLOYMENTS, ns, name)
    # Said once, as it happens (the status then says what still blocks the Model).
    await eventually(
        lambda: any(
            e["type"] == "Warning" and "workers were stopped" in e["message"]
            for e in events_for(cluster, name)
        ),
        20,
        "a Warning Event saying why",
        operator,
    )
    found = cluster.get(MODELS, ns, name)
    assert found is not None and found["status"]["state"] == "FAILED"
    assert ready(cluster, name)["reason"] == "SecretNotPermitted"
    assert cluster.get("v1/services", ns, name) is not None, "the Service stays"

    await cluster.patch(SECRETS, ns, "other-team-token", {"metadata": {"labels": CONSENT}})
    await eventually(
        lambda: secret_refs(cluster, name) == ["other-team-token"], 20, "the workers back", operator
    )

    await cluster.remove(SECRETS, ns, "other-team-token")
    await cluster.gone(SECRETS, ns, "other-team-token")
    await asyncio.sleep(3)
    assert secret_refs(cluster, name) == ["other-team-token"], "a Secret that is gone is no threat"
    await apply_documents(cluster, [token_secret(CONSENT)])


async def test_taking_a_registry_credentials_consent_back_empties_its_pull_secret(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """The operator's pull Secret is a copy of the Registry's credentials: when their owner takes
    the label off, the copy is emptied and no longer published."""
    ns = cluster.namespace
    login = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "robot", "labels": CONSENT},
        "type": "kubernetes.io/basic-auth",
        "data": {
            "username": base64.b64encode(b"robot").decode(),
            "password": base64.b64encode(TOKEN.encode()).decode(),
        },
    }
    registry = {
        "apiVersion": "modelyard.dev/v1alpha1",
        "kind": "Registry",
        "metadata": {"name": "private"},
        "spec": {"url": "http://127.0.0.1:9", "credentialsSecret": "robot"},
    }
    await apply_documents(cluster, [login, registry])

    def pull_secret() -> Any:
        return ((cluster.get(REGISTRIES, ns, "private") or {}).get("status") or {}).get(
            "pullSecret"
        )

    await eventually(lambda: pull_secret() == "private-pull", 20, "a pull Secret", operator)
    copy = cluster.get(SECRETS, ns, "private-pull")
    assert copy is not None
    assert TOKEN in base64.b64decode(copy["data"][".dockerconfigjson"]).decode()

    await cluster.patch(SECRETS, ns, "robot", {"metadata": {"labels": {CONSENT_KEY: None}}})
    await eventually(lambda: pull_secret() is None, 20, "no pull Secret published", operator)
    emptied = cluster.get(SECRETS, ns, "private-pull")
    assert emptied is not None
    assert base64.b64decode(emptied["data"][".dockerconfigjson"]) == b'{"auths": {}}'


class Trap:
    """An HTTP server on 127.0.0.2, where the test's egress policy forbids the operator to go:
    what reaches it was sent where no Registry may send the operator."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.runner: aiohttp.web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Trap:
        async def record(request: aiohttp.web.Request) -> aiohttp.web.Response:
            self.hits.append(request.path)
            return aiohttp.web.json_response({"token": "t"})

        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self.runner = aiohttp.web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.2", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def bouncer(answers: dict[str, tuple[int, dict[str, str]]]) -> aiohttp.web.AppRunner:
    """A registry that answers /v2/ as told (a redirect, a token challenge): a real registry
    sends neither where a test wants, so this plays a hostile one."""

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        status, headers = answers.get(request.path, (404, {}))
        return aiohttp.web.Response(status=status, headers=headers)

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


async def test_registries_obey_the_egress_policy_redirects_and_token_services_too(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A Registry's URL, where its answers redirect, and the token service it names are all
    checked against the egress policy before anything is sent: a Registry writer cannot make
    the operator reach the API server or a denied address, nor learn from the status whether
    something answers there."""
    trap = await Trap().start()
    redirecting = await bouncer(
        {"/v2/": (302, {"Location": f"http://127.0.0.2:{trap.port}/latest/meta-data/"})}
    )
    challenging = await bouncer(
        {
            "/v2/": (
                401,
                {"WWW-Authenticate": f'Bearer realm="http://127.0.0.2:{trap.port}/token"'},
            )
        }
    )
    denied = {"externalModels": {"deniedCIDRs": ["169.254.0.0/16", "127.0.0.2/32"]}}
    operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path, config=denied)
    operator.start()
    try:

        def registry(name: str, url: str) -> dict[str, Any]:
            return {
                "apiVersion": "modelyard.dev/v1alpha1",
                "kind": "Registry",
                "metadata": {"name": name},
                "spec": {"url": url},
            }

        def port(runner: aiohttp.web.AppRunner) -> int:
            return int(runner.addresses[0][1])

        await apply_documents(
            cluster,
            [
                registry("the-api", cluster.url),
                registry("redirected", f"http://127.0.0.1:{port(redirecting)}"),
                registry("token-elsewhere", f"http://127.0.0.1:{port(challenging)}"),
            ],
        )

        def reason(name: str) -> Any:
            return condition(cluster.get(REGISTRIES, cluster.namespace, name)).get("reason")

        for name in ("the-api", "redirected", "token-elsewhere"):
            await eventually(
                lambda name=name: reason(name) == "EndpointNotPermitted",
                20,
                f"{name} refused",
                operator,
            )
        assert trap.hits == [], "the operator went where the policy forbids"
        assert not [s for s in cluster.served if s.path.startswith("/v2")], "it asked the API"
        messages = {
            name: condition(cluster.get(REGISTRIES, cluster.namespace, name))["message"]
            for name in ("the-api", "redirected", "token-elsewhere")
        }
        assert "API server" in messages["the-api"], messages
        assert "127.0.0.2/32" in messages["redirected"], messages
        assert "127.0.0.2/32" in messages["token-elsewhere"], messages
    finally:
        await operator.stop()
        await redirecting.cleanup()
        await challenging.cleanup()
        await trap.stop()

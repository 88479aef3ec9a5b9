"""Known secret values never appear in logs, status, Events or metrics.

The scenario touches every path a credential travels: a Registry logging in with a basic-auth
Secret (and its generated pull Secret), another with a dockerconfigjson token, a Model whose
secret-typed parameter names a Secret, and a Model where someone pasted the secret itself into
the parameter by mistake. The operator runs with --verbose, its most talkative setting.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.controllers import CONSENT, DEPLOYMENTS, MODELS, PLURALS, apply_documents, condition
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools

#: Where the manifests below say they live; each test applies them into its own namespace.
NS = "ml-team"
PASSWORD = "S3cret-Pa55word-7Qx"
TOKEN = "tok-Zr8-quay-robot-token"
HF_TOKEN = "hf_real_secret_token_9Ka"
PASTED = "hf_pasted_by_mistake_4Lm"
SECRETS = (PASSWORD, TOKEN, HF_TOKEN, PASTED)


def secret(name: str, kind: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {"name": name, "namespace": NS, "labels": CONSENT},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def leaks(text: str) -> list[str]:
    found = [value for value in SECRETS if value in text]
    found += [value for value in SECRETS if base64.b64encode(value.encode()).decode() in text]
    return found


async def test_secret_values_stay_secret(cluster: Cluster, tmp_path: Path) -> None:
    require_tools()
    local = await LocalRegistry(tmp_path / "registry", auth=("robot", PASSWORD)).start()
    digest = local.push("acme/embedder", "1.0.0", "weights")
    operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        dockerconfig = json.dumps({"auths": {local.host: {"username": "robot", "password": TOKEN}}})
        template = example("ModelTemplate", "chat-h100")
        template["spec"]["image"] = {
            "registry": "local",
            "repository": "acme/embedder",
            "digest": digest,
        }
        template["spec"]["resources"] = {"cpus": 1}
        good = example("Model", "awesome-chat")
        del good["spec"]["version"]
        pasted = example("Model", "awesome-chat")
        pasted["metadata"]["name"] = "pasted-secret"
        del pasted["spec"]["version"]
        pasted["spec"]["parameters"]["HF_TOKEN"] = PASTED
        await apply_documents(
            cluster,
            [
                secret(
                    "robot", "kubernetes.io/basic-auth", {"username": "robot", "password": PASSWORD}
                ),
                secret(
                    "robot-config",
                    "kubernetes.io/dockerconfigjson",
                    {".dockerconfigjson": dockerconfig},
                ),
                secret("hf-token", "Opaque", {"token": HF_TOKEN}),
                {
                    "apiVersion": "modelyard.dev/v1alpha1",
                    "kind": "Registry",
                    "metadata": {"name": "local", "namespace": NS},
                    "spec": {"url": local.url, "credentialsSecret": "robot"},
                },
                {
                    "apiVersion": "modelyard.dev/v1alpha1",
                    "kind": "Registry",
                    "metadata": {"name": "wrong-token", "namespace": NS},
                    "spec": {"url": local.url, "credentialsSecret": "robot-config"},
                },
                template,
                good,
                pasted,
            ],
        )
        await eventually(
            lambda: (
                condition(cluster.get(PLURALS["Registry"], cluster.namespace, "local")).get(
                    "reason"
                )
                == "Reachable"
            ),
            20,
            "registry reachable",
            operator,
        )
        await eventually(
            lambda: (
                condition(cluster.get(PLURALS["Registry"], cluster.namespace, "wrong-token")).get(
                    "reason"
                )
                == "Unauthorized"
            ),
            20,
            "token refused",
            operator,
        )
        await eventually(
            lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "awesome-chat"),
            20,
            "Deployment",
            operator,
        )
        await eventually(
            lambda: (
                condition(cluster.get(MODELS, cluster.namespace, "pasted-secret")).get("reason")
                == "ParametersInvalid"
            ),
            20,
            "pasted secret refused",
            operator,
        )
        env = cluster.get(DEPLOYMENTS, cluster.namespace, "awesome-chat")["spec"]["template"][
            "spec"
        ]["containers"][0]["env"]
        assert {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
        } in env
        metrics = operator.metrics()
        assert metrics
    finally:
        await operator.stop()
        await local.stop()

    statuses = json.dumps(
        [
            o.get("status")
            for kind in ("Registry", "ModelTemplate", "Model")
            for o in cluster.list(PLURALS[kind], cluster.namespace)
        ]
    )
    events = json.dumps(cluster.list("v1/events"))
    children = json.dumps(
        [
            o
            for resource in (DEPLOYMENTS, "v1/services", "autoscaling/v2/horizontalpodautoscalers")
            for o in cluster.list(resource, cluster.namespace)
        ]
    )
    assert leaks(operator.output) == [], "secret in the operator's log"
    assert leaks(statuses) == [], "secret in a status"
    assert leaks(events) == [], "secret in an Event"
    assert leaks(metrics) == [], "secret in the metrics"
    assert leaks(children) == [], "secret copied into a child (it must be a secretKeyRef)"
    # The pull Secret the operator generated is the one place the password may live.
    pull = cluster.get("v1/secrets", cluster.namespace, "local-pull")
    assert pull is not None and pull["type"] == "kubernetes.io/dockerconfigjson"

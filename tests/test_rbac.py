"""The chart's operator RBAC is exactly what the operator uses: no call refused, no rule unused.

Every operator test runs the operator with a token of the chart's ServiceAccount, bound to the
ClusterRole that `helm template` renders, so the real API server answers a missing verb with 403
(and the `cluster` fixture fails any test that saw one). Here the operator runs a scenario that
touches every code path (every autoscaler and the switches between them, a Registry with a
basic-auth Secret and its generated pull Secret, a verified version, a template's finalizer
added and removed, Events); the fault proxy records every request, each becomes (API group,
resource, verb), and the set is compared with the rendered rules: no rule is unused either.
`watchNamespaces` mode — a Role per namespace — is proved the same way.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

from support.cluster import (
    OPERATOR_NAMESPACE,
    Cluster,
    grant_lease,
    operator_identity,
    render_chart,
)
from support.controllers import (
    CONSENT,
    DEPLOYMENTS,
    HPAS,
    MODELS,
    PODS,
    REGISTRIES,
    SCALED_OBJECTS,
    SERVICES,
    TEMPLATES,
    VERSIONS,
    apply_documents,
    condition,
    run_pods,
)
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools

ROOT = Path(__file__).resolve().parent.parent
#: Where the manifests below say they live; each test applies them into its own namespace.
NS = "ml-team"
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)


#: Not calls but checks: the OwnerReferencesPermissionEnforcement admission plugin (on in the
#: test control plane) lets a child name its owner with blockOwnerDeletion only if the writer may
#: update the owner's finalizers. The scenario below creates such children, so a missing rule
#: shows as a refused call.
OWNER_CHECKS = {
    ("modelyard.dev", "models/finalizers", "update"),
    ("modelyard.dev", "registries/finalizers", "update"),
}


def calls(served: list[tuple[str, str, int]]) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) for every resource request the operator made."""
    found: set[tuple[str, str, str]] = set()
    for method, logged, status in served:
        path, watching = logged.removesuffix("?watch"), logged.endswith("?watch")
        match = PATH.match(path)
        if not match:
            continue  # discovery: /api, /apis, /apis/group/version
        group = "" if match["core"] else match["group"]
        resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
        if match["namespace"] is None and match["resource"] == "namespaces" and match["name"]:
            continue
        if method == "GET":
            verb = "watch" if watching else ("get" if match["name"] else "list")
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
        found.add((group, resource, verb))
        if method == "PATCH" and status == 201:
            found.add((group, resource, "create"))  # server-side apply that created the object
    return found


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_role(tmp_path: Path) -> dict[str, Any]:
    return next(
        d
        for d in render_chart(tmp_path)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator")
    )


async def test_operator_rules_are_exactly_the_calls_it_makes(
    cluster: Cluster, tmp_path: Path
) -> None:
    require_tools()
    role = operator_role(tmp_path)
    # As the chart runs it: with leader election, under the chart's Lease Role (placed in
    # this test's namespace, so the Lease is the test's own).
    lease_role = await asyncio.to_thread(grant_lease, cluster.api, tmp_path, cluster.namespace)
    local = await LocalRegistry(tmp_path / "registry", auth=("robot", "pa55")).start()
    digest = local.push("acme/awesome-llm", "1.0.0", "weights")
    operator = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path),
        tmp_path,
        lease_namespace=cluster.namespace,
        config={"weightsVerifierImage": f"{local.host}/modelyard/operator@{digest}"},
    ).start()
    try:
        registry = {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "Registry",
            "metadata": {"name": "local", "namespace": NS},
            "spec": {"url": local.url, "credentialsSecret": "robot"},
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/basic-auth",
            "metadata": {"name": "robot", "namespace": NS, "labels": CONSENT},
            "data": {
                "username": base64.b64encode(b"robot").decode(),
                "password": base64.b64encode(b"pa55").decode(),
            },
        }
        template = example("ModelTemplate", "cpu-embedding")
        template["spec"]["image"] = {
            "registry": "local",
            "repository": "acme/awesome-llm",
            "digest": digest,
        }
        version = {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "llm-1.0.0", "namespace": NS},
            "spec": {
                "model": "awesome-llm",
                "version": "1.0.0",
                "registry": "local",
                "repository": "acme/awesome-llm",
                "digest": digest,
                "tag": "1.0.0",
            },
        }
        await apply_documents(
            cluster, [secret, registry, template, version, example("Model", "docs-embedder")]
        )
        await eventually(
            lambda: cluster.get(HPAS, cluster.namespace, "docs-embedder"), 20, "HPA", operator
        )
        await eventually(
            lambda: (
                condition(
                    cluster.get(
                        "modelyard.dev/v1alpha1/modelversions", cluster.namespace, "llm-1.0.0"
                    )
                ).get("reason")
                == "DigestVerified"
            ),
            20,
            "verified",
            operator,
        )
        await eventually(
            lambda: cluster.get("v1/secrets", cluster.namespace, "local-pull"),
            20,
            "pull secret",
            operator,
        )
        # HPA → KEDA → fixed size: every autoscaler created and deleted once.
        await cluster.patch(
            TEMPLATES,
            cluster.namespace,
            "cpu-embedding",
            {"spec": {"scaling": {"minWorkers": 0}}},
            manager="kubectl",
        )
        await eventually(
            lambda: (
                cluster.get(SCALED_OBJECTS, cluster.namespace, "docs-embedder")
                and not cluster.get(HPAS, cluster.namespace, "docs-embedder")
            ),
            20,
            "KEDA",
            operator,
        )
        await cluster.patch(
            TEMPLATES,
            cluster.namespace,
            "cpu-embedding",
            {"spec": {"scaling": {"minWorkers": 4, "maxWorkers": 4}}},
            manager="kubectl",
        )
        await eventually(
            lambda: (
                not cluster.get(SCALED_OBJECTS, cluster.namespace, "docs-embedder")
                and (cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder") or {})
                .get("spec", {})
                .get("replicas")
                == 4
            ),
            20,
            "fixed size",
            operator,
        )
        await warm_and_withdraw(cluster, local, digest, operator)
        # Moved out of the cluster: its Deployment and ClusterIP Service are deleted.
        moved = example("Model", "docs-embedder")
        del moved["spec"]["template"], moved["spec"]["parameters"]
        moved["spec"]["external"] = {"url": "http://localhost:9", "modelType": "EMBEDDING"}
        await apply_documents(cluster, [moved])
        await eventually(
            lambda: (
                (cluster.get(SERVICES, cluster.namespace, "docs-embedder") or {})
                .get("spec", {})
                .get("type")
                == "ExternalName"
                and cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder") is None
            ),
            20,
            "moved out of the cluster",
            operator,
        )
        # The template's finalizer goes once its last Model is gone.
        await cluster.remove(MODELS, cluster.namespace, "docs-embedder")
        await cluster.remove(TEMPLATES, cluster.namespace, "cpu-embedding")
        await eventually(
            lambda: cluster.get(TEMPLATES, cluster.namespace, "cpu-embedding") is None,
            20,
            "template gone",
            operator,
        )
        # Upgraded from a release that ran on kopf: its finalizer on a Registry and a
        # ModelVersion is removed when they are deleted, or they would never go.
        for resource, name in ((VERSIONS, "llm-1.0.0"), (REGISTRIES, "local")):
            await cluster.patch(
                resource,
                cluster.namespace,
                name,
                {"metadata": {"finalizers": ["modelyard.dev/kopf-finalizer"]}},
                manager="kopf",
            )
            await cluster.remove(resource, cluster.namespace, name)
            await eventually(
                lambda resource=resource, name=name: (
                    cluster.get(resource, cluster.namespace, name) is None
                ),
                20,
                f"{name} deleted despite kopf's finalizer",
                operator,
            )
    finally:
        await operator.stop()
        await local.stop()

    made = calls(cluster.served) | OWNER_CHECKS
    allowed = granted(role) | granted(lease_role)
    assert made - allowed == set(), f"calls the chart would refuse: {sorted(made - allowed)}"
    assert allowed - made == set(), f"rules the operator never uses: {sorted(allowed - made)}"


def weights_documents(digest: str, weights: str, number: str) -> list[dict[str, Any]]:
    """A template that mounts weights, a version of weights, a Model of one worker on them."""
    template = example("ModelTemplate", "cpu-embedding")
    template["metadata"]["name"] = "weights-embedding"
    template["spec"]["image"] = {
        "registry": "local",
        "repository": "acme/awesome-llm",
        "digest": digest,
    }
    template["spec"]["weights"] = {"mountPath": "/models"}
    template["spec"]["scaling"] = {"minWorkers": 1, "maxWorkers": 1, "perWorker": 4}
    model = example("Model", "docs-embedder")
    model["metadata"]["name"] = "weights-embedder"
    model["spec"] = {"template": "weights-embedding", "version": {"model": "emb", "version": "1.x"}}
    return [
        template,
        {
            "apiVersion": "modelyard.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": f"emb-{number}", "namespace": NS},
            "spec": {
                "model": "emb",
                "version": number,
                "registry": "local",
                "weights": {"repository": "acme/embedder-weights", "digest": weights},
            },
        },
        model,
    ]


async def warm_and_withdraw(
    cluster: Cluster, local: LocalRegistry, digest: str, operator: OperatorProcess
) -> None:
    """A Model on weights whose worker runs on a node, then a new version of its weights: a
    warming pod is made for that node; the version withdrawn, the pod is deleted. No kubelet
    runs here: the worker is bound to a Node object by hand, as the scheduler would, and
    reported ready as its kubelet would (the real node's warming is tests/test_weights.py's)."""
    first = local.push("acme/embedder-weights", "1.0.0", "weights one")
    await apply_documents(cluster, weights_documents(digest, first, "1.0.0"))
    pod = await eventually(
        lambda: next(
            iter(cluster.list(PODS, cluster.namespace, "modelyard.dev/model=weights-embedder")),
            None,
        ),
        30,
        "the worker's pod",
        operator,
    )
    cluster.api.create(
        "v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "rbac-node"}}
    )
    cluster.api.request(
        "POST",
        f"/api/v1/namespaces/{cluster.namespace}/pods/{pod['metadata']['name']}/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod["metadata"]["name"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "rbac-node"},
        },
    )
    # And reported serving, as its kubelet would (none runs here): warming protects what serves.
    await run_pods(cluster, cluster.namespace, "weights-embedder", count=1)
    second = local.push("acme/embedder-weights", "1.1.0", "weights two")
    await apply_documents(cluster, weights_documents(digest, second, "1.1.0")[1:2])
    warming = await eventually(
        lambda: cluster.list(PODS, cluster.namespace, "modelyard.dev/warms=weights-embedder"),
        30,
        "a warming pod",
        operator,
    )
    assert [p["spec"]["nodeName"] for p in warming] == ["rbac-node"]
    await cluster.remove(VERSIONS, cluster.namespace, "emb-1.1.0")
    # Deleted: only marked so, as no kubelet is there to confirm the pod's end.
    await eventually(
        lambda: all(
            p["metadata"].get("deletionTimestamp")
            for p in cluster.list(PODS, cluster.namespace, "modelyard.dev/warms=weights-embedder")
        ),
        30,
        "the warming pod deleted",
        operator,
    )
    await cluster.remove(MODELS, cluster.namespace, "weights-embedder")
    cluster.api.delete("v1/nodes", None, "rbac-node")


async def test_watch_namespaces_mode_works_under_its_roles_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`watchNamespaces: [ns]`: a Role in that namespace is all it has, nothing cluster-wide."""
    ns = cluster.namespace
    other = f"{ns}-other"
    account = f"modelyard-{ns}"[:63]
    token = await asyncio.to_thread(
        operator_identity, cluster.api, tmp_path, account, f"watchNamespaces[0]={ns}"
    )
    role = cluster.get("rbac.authorization.k8s.io/v1/roles", ns, "modelyard-operator")
    assert role is not None, "the chart renders a Role in the watched namespace"
    assert cluster.get("rbac.authorization.k8s.io/v1/roles", OPERATOR_NAMESPACE, account) is None
    await cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}})
    operator = OperatorProcess(
        cluster.operator_kubeconfig(tmp_path, token), tmp_path, namespaces=[ns]
    ).start()
    try:
        offline = example("Registry", "dockerhub")
        offline["spec"]["url"] = "http://127.0.0.1:9"
        documents = [offline, example("ModelTemplate", "cpu-embedding")]
        await apply_documents(cluster, [*documents, example("Model", "docs-embedder")])
        elsewhere = example("Model", "docs-embedder")
        elsewhere["metadata"]["namespace"] = other
        await cluster.apply(elsewhere)
        await eventually(lambda: cluster.get(HPAS, ns, "docs-embedder"), 20, "HPA", operator)
        # Played kubelet: the subject is the operator's permissions, not the pods.
        await run_pods(cluster, ns, "docs-embedder")
        await eventually(
            lambda: (
                condition(cluster.get(MODELS, ns, "docs-embedder")).get("reason") == "Available"
            ),
            20,
            "READY",
            operator,
        )
        # The Model outside the watched namespaces is not the operator's business.
        assert (cluster.get(MODELS, other, "docs-embedder") or {}).get("status") is None
        assert cluster.get(DEPLOYMENTS, other, "docs-embedder") is None
    finally:
        await operator.stop()
        await asyncio.to_thread(cluster.api.delete, "v1/namespaces", None, other)
    assert [s for s in cluster.served if s.status == 403] == []
    assert all(f"/namespaces/{other}/" not in s.path for s in cluster.served)
    rendered = render_chart(tmp_path, f"watchNamespaces[0]={ns}")
    allowed = set().union(
        *(
            granted(d)
            for d in rendered
            if d["kind"] == "Role" and d["metadata"]["name"].endswith("-operator")
        )
    )
    made = calls(cluster.served)
    assert made - allowed == set(), f"calls the chart would refuse: {sorted(made - allowed)}"


#: (user, ClusterRole bound in the namespace, [(verb, resource, allowed)]): what each role of
#: the chart grants, asked of the real authorizer (SubjectAccessReview, `kubectl auth can-i`).
#: view, edit and admin are Kubernetes' own roles: the chart's rules reach them only through the
#: clusterrole-aggregation controller, which the test control plane runs like every cluster.
ROLE_CASES = [
    (
        "viewer",
        "view",
        [
            ("list", "models", True),
            ("get", "modelversions", True),
            ("create", "models", False),
            ("delete", "registries", False),
        ],
    ),
    (
        "editor",
        "edit",
        [
            ("create", "models", True),
            ("delete", "models", True),
            ("get", "modeltemplates", True),
            ("create", "modeltemplates", False),
            ("create", "registries", False),
        ],
    ),
    (
        "namespace-admin",
        "admin",
        [
            (verb, kind, True)
            for verb in ("create", "delete")
            for kind in ("models", "modeltemplates", "modelversions", "registries")
        ],
    ),
    (
        "model-owner",
        "modelyard-model-manager",
        [
            ("create", "modelversions", True),
            ("get", "modeltemplates", True),
            ("create", "models", False),
            ("create", "registries", False),
            ("get", "secrets", False),
        ],
    ),
]


async def test_user_roles_grant_what_they_say_through_aggregation(
    cluster: Cluster, tmp_path: Path
) -> None:
    roles = [
        d
        for d in render_chart(tmp_path)
        if d["kind"] == "ClusterRole"
        and d["metadata"]["name"].startswith("modelyard-")
        and not d["metadata"]["name"].endswith("-operator")
    ]
    assert {r["metadata"]["name"] for r in roles} >= {
        "modelyard-view",
        "modelyard-edit",
        "modelyard-admin",
        "modelyard-model-manager",
    }
    for role in roles:
        await cluster.apply(role)
    for user, role_name, _ in ROLE_CASES:
        await cluster.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": user, "namespace": cluster.namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role_name,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )

    def allowed(user: str, verb: str, resource: str) -> bool:
        review = cluster.api.request(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "resourceAttributes": {
                        "namespace": cluster.namespace,
                        "verb": verb,
                        "group": "" if resource == "secrets" else "modelyard.dev",
                        "resource": resource,
                    },
                },
            },
        )
        return bool(review["status"].get("allowed"))

    def answers() -> list[tuple[str, str, str, bool]]:
        return [
            (user, verb, resource, allowed(user, verb, resource))
            for user, _, cases in ROLE_CASES
            for verb, resource, _ in cases
        ]

    wanted = [
        (user, verb, resource, expected)
        for user, _, cases in ROLE_CASES
        for verb, resource, expected in cases
    ]
    # The aggregation controller copies the rules in shortly after the roles appear.
    await eventually(
        lambda: answers() == wanted,
        30,
        lambda: (
            f"the roles to grant what they say; wrong: "
            f"{[a for a, w in zip(answers(), wanted, strict=True) if a != w]}"
        ),
    )

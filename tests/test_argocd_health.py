"""Argo CD health checks (docs/argocd-health.yaml), run under Lua 5.1 as Argo CD runs them, on
status objects produced by the operator's own reconcile code."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import lupa.lua51 as lua
import pytest
import yaml

from modelyard.api.v1alpha1 import parse
from modelyard.builders.plan import plan_model
from modelyard.config import OperatorConfig
from modelyard.reconcile.model import model_status
from modelyard.reconcile.registry import Connections, reconcile_registry
from modelyard.reconcile.template import reconcile_template
from modelyard.reconcile.version import reconcile_version
from modelyard.status.conditions import failed
from modelyard.status.model import observe
from support.examples import example
from support.registry import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = yaml.safe_load((ROOT / "docs" / "argocd-health.yaml").read_text())["data"]
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run the kind's health script as Argo CD does: `obj` global in, `hs` table out."""
    runtime = lua.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(v) for v in value])  # a sequence: ipairs works
        return value

    runtime.globals().obj = to_lua(obj)
    script = SCRIPTS[f"resource.customizations.health.modelyard.dev_{kind}"]
    result = runtime.execute(f"return (function() {script} end)()")
    return str(result["status"]), str(result["message"] or "")


class RecordingKube:
    """Stands in for the API client here: these tests are about the Lua, not the API."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    async def patch_status(
        self, _api: str, _kind: str, _ns: Any, _name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.statuses.append(copy.deepcopy(status))
        return {}

    async def post_event(self, *_: Any) -> None:
        return None

    async def get(self, *_: Any) -> None:
        return None

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return manifest


def with_status(obj: dict[str, Any], status: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["generation"] = generation
    obj["status"] = status
    return obj


def model_cases() -> list[tuple[str, dict[str, Any], str]]:
    config = OperatorConfig()
    body = example("Model", "docs-embedder")
    body["metadata"]["generation"] = 1
    model = parse(body)
    registries = {"dockerhub": parse(example("Registry", "dockerhub"))}
    template = parse(example("ModelTemplate", "cpu-embedding"))
    plan = plan_model(model, template, registries, [], config)
    assert plan.children is not None
    spec_hash = plan.children.deployment["spec"]["template"]["metadata"]["annotations"][
        "modelyard.dev/spec-hash"
    ]
    deployment = {
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "updatedReplicas": 2,
        },
    }
    pod = {
        "metadata": {"annotations": {"modelyard.dev/spec-hash": spec_hash}, "name": "p"},
        "status": {},
    }
    crash = {
        "metadata": pod["metadata"],
        "status": {
            "containerStatuses": [
                {
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1}},
                }
            ]
        },
    }
    zero = {
        **deployment,
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 1, "replicas": 0},
    }
    bad = parse({**body, "spec": {**body["spec"], "parameters": {"TYPO": 1}}})

    def status(
        m: Any,
        deploy: Any,
        pods: list[Any],
        minimum: int = 2,
        refused: Any = None,
        rollout: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        p = plan_model(m, template, registries, [], config)
        return model_status(
            m,
            plan=p,
            blocking=p.blocking,
            observation=observe(deploy, pods, spec_hash, minimum),
            previous={},
            workload=p.workload,
            refused=refused,
            rollout_status=rollout,
        )

    def rollout(phase: str, reason: str) -> dict[str, Any]:
        return {
            "phase": phase,
            "current": "1.0.0 (sha256:ab)",
            "candidate": "1.1.0 (sha256:cd)",
            "candidateRevision": "0123456789abcdef",
            "reason": reason,
            "message": "...",
            "modelGeneration": 1,
        }

    serving_through = [
        (
            f"serving, rollout {phase} ({reason})",
            with_status(
                body, status(model, deployment, [pod, pod], rollout=rollout(phase, reason))
            ),
            expected,
        )
        for phase, reason, expected in (
            ("Canary", "Canary", "Progressing"),
            ("AwaitingCapacity", "AwaitingCapacity", "Progressing"),
            ("Analysing", "Analysing", "Progressing"),
            ("Promoting", "Promoting", "Progressing"),
            ("Promoted", "Promoted", "Healthy"),
            # The version Git asks for did not go out: Degraded until the spec changes.
            ("RolledBack", "SchemaMismatch", "Degraded"),
            ("RolledBack", "CrashLoopBackOff", "Degraded"),
        )
    ]

    quota = failed("QuotaExceeded", "the API server refused Service docs-embedder (403): ...")

    return [
        ("ready", with_status(body, status(model, deployment, [pod, pod])), "Healthy"),
        ("deploying", with_status(body, status(model, None, [])), "Progressing"),
        ("crash-looping", with_status(body, status(model, deployment, [crash, pod])), "Degraded"),
        ("scaled to zero", with_status(body, status(model, zero, [], 0)), "Suspended"),
        ("invalid parameters", with_status(body, status(bad, None, [])), "Degraded"),
        (
            "a child refused by a quota",
            with_status(body, status(model, deployment, [pod, pod], refused=quota)),
            "Degraded",
        ),
        (
            "template missing",
            with_status(
                body,
                model_status(
                    model,
                    plan=plan_model(model, None, registries, [], config),
                    blocking=plan_model(model, None, registries, [], config).blocking,
                    observation=observe(None, [], "", 1),
                    previous={},
                    workload=None,
                ),
            ),
            "Progressing",
        ),
        (
            "stale status",
            with_status(body, status(model, deployment, [pod, pod]), generation=2),
            "Progressing",
        ),
        ("no status yet", example("Model", "docs-embedder"), "Progressing"),
        *serving_through,
    ]


@pytest.mark.parametrize(
    ("case", "obj", "expected"), model_cases(), ids=[c[0] for c in model_cases()]
)
def test_model_health(case: str, obj: dict[str, Any], expected: str) -> None:
    status, message = health("Model", obj)
    assert status == expected, message


async def test_template_health() -> None:
    config = OperatorConfig()
    kube = RecordingKube()
    good = with_status(example("ModelTemplate", "cpu-embedding"), {})
    good["metadata"]["finalizers"] = ["modelyard.dev/in-use-protection"]  # as the operator left it
    await reconcile_template(good, [], kube, config)  # type: ignore[arg-type]
    assert health("ModelTemplate", with_status(good, kube.statuses[-1]))[0] == "Healthy"
    unknown = copy.deepcopy(good)
    unknown["spec"]["resources"] = {"gpus": 1, "gpuType": "nvidia-volta-v100"}
    await reconcile_template(unknown, [], kube, config)  # type: ignore[arg-type]
    assert health("ModelTemplate", with_status(unknown, kube.statuses[-1])) == (
        "Degraded",
        kube.statuses[-1]["conditions"][0]["reason"]
        + ": "
        + kube.statuses[-1]["conditions"][0]["message"],
    )
    held = copy.deepcopy(good)
    held["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await reconcile_template(held, ["docs-embedder"], kube, config)  # type: ignore[arg-type]
    assert health("ModelTemplate", with_status(held, kube.statuses[-1]))[0] == "Progressing"


@pytest.fixture
async def fake_registry() -> AsyncIterator[dict[str, str]]:
    """/v2/ answers; manifests answer with the digests the test sets per reference."""
    digests: dict[str, str] = {}

    async def manifests(request: aiohttp.web.Request) -> aiohttp.web.Response:
        digest = digests.get(request.match_info["reference"])
        return aiohttp.web.Response(
            status=200 if digest else 404, headers={"Docker-Content-Digest": digest or ""}
        )

    app = aiohttp.web.Application()

    async def api_root(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=200)

    app.router.add_get("/v2/", api_root)
    app.router.add_route("HEAD", "/v2/{repository:.+}/manifests/{reference}", manifests)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    digests["url"] = f"http://127.0.0.1:{port}"
    yield digests
    await runner.cleanup()


async def test_registry_and_version_health(fake_registry: dict[str, str]) -> None:
    kube = RecordingKube()
    connections = Connections()
    registry = example("Registry", "dockerhub")
    registry["spec"]["url"] = fake_registry["url"]
    outcome = await reconcile_registry(with_status(registry, {}), kube, connections)  # type: ignore[arg-type]
    assert health("Registry", with_status(registry, kube.statuses[-1]))[0] == "Healthy"
    down = copy.deepcopy(registry)
    down["spec"]["url"] = "http://127.0.0.1:9"
    unreachable = Connections()
    await reconcile_registry(with_status(down, {}), kube, unreachable)  # type: ignore[arg-type]
    await unreachable.close()
    assert health("Registry", with_status(down, kube.statuses[-1]))[0] == "Degraded"

    version = example("ModelVersion", "awesome-llm-1.1.0")
    version["spec"].update(registry="dockerhub", digest=DIGEST, tag="1.1.0")
    version = with_status(version, {})
    await reconcile_version(version, [], None, kube)  # type: ignore[arg-type]
    assert health("ModelVersion", with_status(version, kube.statuses[-1]))[0] == "Progressing"
    fake_registry.update({DIGEST: DIGEST, "1.1.0": DIGEST})
    await reconcile_version(version, [], outcome.connection, kube)  # type: ignore[arg-type]
    verified = with_status(version, kube.statuses[-1])
    assert health("ModelVersion", verified)[0] == "Healthy"
    fake_registry["1.1.0"] = OTHER
    await reconcile_version(verified, [], outcome.connection, kube)  # type: ignore[arg-type]
    status, message = health("ModelVersion", with_status(version, kube.statuses[-1]))
    assert status == "Healthy" and message.startswith("TagMoved") and OTHER in message
    fresh = with_status(example("ModelVersion", "awesome-llm-1.0.0"), {})
    fresh["spec"].update(registry="dockerhub", digest=DIGEST, tag="1.1.0")
    await reconcile_version(fresh, [], outcome.connection, kube)  # type: ignore[arg-type]
    assert health("ModelVersion", with_status(fresh, kube.statuses[-1]))[0] == "Degraded"
    await connections.close()


def test_a_moved_mlflow_alias_is_healthy_and_says_so() -> None:
    version = example("ModelVersion", "churn-classifier-2-1-0")
    moved = "alias champion now points to version 4; version 3 stays pinned"
    status = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "AliasCurrent", "status": "False", "reason": "AliasMoved", "message": moved},
            {"type": "Ready", "status": "True", "reason": "VersionVerified", "message": "ok"},
        ],
    }
    state, message = health("ModelVersion", with_status(version, status))
    assert state == "Healthy" and message == f"AliasMoved: {moved}"

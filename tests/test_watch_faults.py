"""Watches that fail the quiet ways: stalled, cut mid-event, dripping, expired over and over.

The API server is real; the faults come from the proxy between it and the operator, since a real
server does not misbehave on cue. Each fault is paired with the reaction a user can rely on:

- a stalled watch (socket open, nothing relayed) is noticed after `watchIdleSeconds` of silence
  and resumed from its last resourceVersion: a change made meanwhile is acted on within
  `watchIdleSeconds` + a second or two;
- a watch reset in the middle of an event is resumed; the half event is never read;
- a watch that drips byte by byte delivers whole events, and is not taken for a silent one;
- a 410 storm (every resume refused, as after compactions) costs a list per 410 and no pass for
  what did not change; what appeared during the gap is told as new (a Secret that began to
  consent wakes the Models that wait for it).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from support.cluster import Cluster
from support.controllers import CONSENT, DEPLOYMENTS, MODELS, SECRETS, apply_documents, condition
from support.examples import example
from support.operator_process import OperatorProcess, eventually
from test_deputy import token_secret
from test_operator import embedding_documents, quiet

#: Short, so the tests wait seconds; production's default is 90 s (a bookmark comes every 60).
IDLE = 3


def batch_size(cluster: Cluster, name: str = "docs-embedder") -> str | None:
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, name) or {}
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {})
    for variable in (containers.get("containers") or [{}])[0].get("env") or []:
        if variable.get("name") == "BATCH_SIZE":
            return str(variable.get("value"))
    return None


async def set_batch_size(cluster: Cluster, value: int, name: str = "docs-embedder") -> None:
    await cluster.patch(
        MODELS,
        cluster.namespace,
        name,
        {"spec": {"parameters": {"BATCH_SIZE": value}}},
        manager="kubectl",
        merge=True,
    )


async def served(cluster: Cluster, operator: OperatorProcess) -> None:
    """The Model's Deployment made, and the operator quiet: from now on, a change of the
    Model reaches it by its watch alone (a status write's answer would carry the new spec)."""
    await apply_documents(cluster, embedding_documents())
    await eventually(
        lambda: cluster.get(DEPLOYMENTS, cluster.namespace, "docs-embedder"),
        20,
        "the Deployment",
        operator,
    )
    await quiet(cluster, operator, calm=1.5)


def quick_to_notice(cluster: Cluster, tmp_path: Path) -> OperatorProcess:
    """An operator that takes a watch silent for IDLE seconds for a dead one."""
    return OperatorProcess(
        cluster.operator_kubeconfig(tmp_path), tmp_path, config={"watchIdleSeconds": IDLE}
    ).start()


def reconciles(operator: OperatorProcess, kind: str = "Model") -> float:
    """Passes made so far, by the operator's own counter."""
    pattern = rf'^modelyard_reconciles_total{{kind="{kind}",result="[^"]+"}} (\S+)$'
    return sum(float(found) for found in re.findall(pattern, operator.metrics(), re.M))


async def test_a_stalled_watch_is_noticed_and_resumed_from_where_it_was(
    cluster: Cluster, tmp_path: Path
) -> None:
    operator = quick_to_notice(cluster, tmp_path)
    try:
        await served(cluster, operator)
        assert cluster.proxy.stall_watches(r"/models\?watch") >= 1
        stalled_at = asyncio.get_running_loop().time()
        await set_batch_size(cluster, 17)
        # Nothing is relayed on the stalled watch: only the operator's own silence detector
        # brings the change in, by a new watch resumed from the last resourceVersion.
        await eventually(lambda: batch_size(cluster) == "17", IDLE + 10, "the change", operator)
        took = asyncio.get_running_loop().time() - stalled_at
        assert "nothing came for 3" in operator.output
        assert cluster.proxy.stalled_watches_open() == 0, "the stalled watch was given up"
        resumed = [
            s
            for s in cluster.served
            if s.path.endswith("/models?watch") and s.query.get("resourceVersion")
        ]
        assert resumed, "resumed from a resourceVersion, not listed anew"
        print(f"stalled watch: change applied {took:.1f} s after the stall (idle {IDLE} s)")
    finally:
        await operator.stop()


async def test_a_watch_reset_mid_event_is_resumed_and_nothing_half_read(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    await served(cluster, operator)
    assert cluster.proxy.reset_watches(r"/models\?watch") >= 1
    await set_batch_size(cluster, 23)  # this event is the one cut in half
    await eventually(lambda: batch_size(cluster) == "23", 15, "the change", operator)
    await set_batch_size(cluster, 29)
    await eventually(lambda: batch_size(cluster) == "29", 15, "the next change", operator)
    assert "Traceback" not in operator.output, operator.output[-3000:]


async def test_a_dripping_watch_delivers_whole_events_and_is_not_taken_for_silence(
    cluster: Cluster, tmp_path: Path
) -> None:
    operator = quick_to_notice(cluster, tmp_path)
    try:
        await served(cluster, operator)
        # A byte every 2 ms: a Model's event (a few KB) takes seconds, longer than
        # the idle limit, but bytes keep coming.
        cluster.proxy.drip = 0.002
        await cluster.drop_watches()
        await set_batch_size(cluster, 31)
        # Were the idle limit a limit on the whole event, the event would be cut at 3 s and
        # asked for again from the same resourceVersion, over and over: never delivered.
        await eventually(lambda: batch_size(cluster) == "31", 90, "the change", operator)
    finally:
        cluster.proxy.drip = 0
        await operator.stop()


async def test_a_410_storm_costs_lists_but_no_pass_for_what_did_not_change(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    names = [f"embedder-{index}" for index in range(5)]
    models = []
    for name in names:
        model = example("Model", "docs-embedder")
        model["metadata"]["name"] = name
        models.append(model)
    await apply_documents(cluster, [*embedding_documents()[:2], *models])
    await eventually(
        lambda: all(cluster.get(DEPLOYMENTS, cluster.namespace, n) for n in names),
        30,
        "the Deployments",
        operator,
    )
    await asyncio.sleep(3)  # settled: every pass found nothing more to do
    before = reconciles(operator)
    lists = len([s for s in cluster.served if s.path.endswith("/models") and s.method == "GET"])
    storm = cluster.fail("GET", r"/models\?watch", 410, times=10)
    await cluster.drop_watches()
    await eventually(lambda: storm.hits == 10, 30, "ten 410s", operator)

    def relisted() -> int:
        found = [s for s in cluster.served if s.path.endswith("/models") and s.method == "GET"]
        return len(found) - lists

    await eventually(lambda: relisted() >= 10, 10, "a list after each 410", operator)
    await asyncio.sleep(2)
    assert reconciles(operator) == before, "a relist of unchanged Models woke them"
    # The watch works again afterwards.
    await set_batch_size(cluster, 37, names[0])
    await eventually(lambda: batch_size(cluster, names[0]) == "37", 15, "a change after it")


async def test_a_secret_that_consents_during_a_watch_gap_wakes_the_models_waiting_for_it(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    """The Secret watch is down when its owner labels it, and comes back with a 410: the
    relist finds the Secret new, and the Model blocked on it goes ahead."""
    ns = cluster.namespace
    template = example("ModelTemplate", "chat-h100")
    model = example("Model", "awesome-chat")
    secret_parameter = next(
        p["name"] for p in template["spec"]["parameters"] if p.get("type") == "secret"
    )
    model["spec"]["parameters"][secret_parameter] = "other-team-token/token"
    await apply_documents(cluster, [token_secret(), template, model])
    name = model["metadata"]["name"]

    def parameters() -> Any:
        return condition(cluster.get(MODELS, ns, name), "ParametersValid").get("reason")

    await eventually(lambda: parameters() == "SecretNotPermitted", 20, "refused", operator)
    # The Secret watch goes down and stays down while the owner consents.
    down = cluster.fail("GET", r"/secrets\?watch", 503, times=None)
    await cluster.drop_watches()
    await cluster.patch(SECRETS, ns, "other-team-token", {"metadata": {"labels": CONSENT}})
    await asyncio.sleep(1)
    # When it comes back, the history it would resume from is gone: it lists again. (The
    # 410 is put behind the 503 first, so no watch slips through between the two.)
    cluster.fail("GET", r"/secrets\?watch", 410, times=1)
    cluster.faults.remove(down)
    await eventually(
        lambda: parameters() not in ("SecretNotPermitted", None),
        20,
        "the Model goes ahead once the Secret consents",
        operator,
    )

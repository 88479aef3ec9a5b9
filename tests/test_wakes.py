"""Who wakes whom (`modelyard.reconcile.wakes`): a table of changes and the keys they wake,
over stores held in plain dicts."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.reconcile import wakes
from modelyard.reconcile.wakes import Wakes

NS = "ml"


def obj(name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


MODELS = {
    (NS, "chat"): [obj("chat", {"template": "llm", "parameters": {"token": "api-keys/token"}})],
    (NS, "embed"): [obj("embed", {"template": "llm"})],
    (NS, "remote"): [
        obj(
            "remote",
            {
                "external": {
                    "credentials": {"secretName": "remote-creds"},
                    "tls": {"caSecret": "ca"},
                }
            },
        )
    ],
    ("other", "chat"): [
        obj("chat", {"template": "llm", "parameters": {"token": "api-keys/token"}}, "other")
    ],
}
INDICES: dict[str, Any] = {
    "model_bodies": MODELS,
    "template_bodies": {
        (NS, "llm"): [obj("llm", {"image": {"registry": "hub", "tag": "v1"}})],
        (NS, "fixed"): [obj("fixed", {"image": {"digest": "sha256:0"}})],
        ("other", "llm"): [obj("llm", {"image": {"registry": "hub"}}, "other")],
    },
    "registry_bodies": {
        NS: [
            obj(
                "hub",
                {
                    "credentialsSecret": "hub-creds",
                    "tls": {"caSecret": "ca"},
                    "signatures": {"publicKeys": [{"secretName": "keys"}, "not a dict"]},
                },
            ),
            obj("mirror", {"credentialsSecret": "mirror-creds"}),
        ]
    },
    "version_bodies": {
        NS: [
            obj("v1", {"registry": "hub", "model": "llm", "version": "1"}),
            obj("v1-copy", {"registry": "mirror", "model": "llm", "version": "1"}),
            obj("v2", {"registry": "hub", "model": "llm", "version": "2"}),
        ]
    },
    "models_by_template": {(NS, "llm"): {"embed", "chat"}},
}
ALL_MODELS = [(NS, "chat"), (NS, "embed"), (NS, "remote")]

TABLE: list[tuple[str, Wakes, Wakes]] = [
    (
        "a new Model: itself and its template's list",
        wakes.model_changed((NS, "chat"), None, "llm", itself=True),
        Wakes(template_lists=[(NS, "llm")], models=[(NS, "chat")]),
    ),
    (
        "a Model moved to another template: both lists",
        wakes.model_changed((NS, "chat"), "llm", "fixed", itself=True),
        Wakes(template_lists=[(NS, "llm"), (NS, "fixed")], models=[(NS, "chat")]),
    ),
    (
        "our own write of a Model coming back: nothing",
        wakes.model_changed((NS, "chat"), "llm", "llm", itself=False),
        Wakes(),
    ),
    (
        "a template's spec changed: itself and its Models, in name order",
        wakes.template_changed(INDICES, (NS, "llm"), itself=True, for_models=True),
        Wakes(templates=[(NS, "llm")], models=[(NS, "chat"), (NS, "embed")]),
    ),
    (
        "a template's list of Models changed: itself only",
        wakes.template_changed(INDICES, (NS, "llm"), itself=True, for_models=False),
        Wakes(templates=[(NS, "llm")]),
    ),
    (
        "a Registry changed: itself and every Model of its namespace",
        wakes.registry_changed(INDICES, (NS, "hub"), itself=True),
        Wakes(registries=[(NS, "hub")], models=ALL_MODELS),
    ),
    (
        "a Registry's status written: its Models still look",
        wakes.registry_changed(INDICES, (NS, "hub"), itself=False),
        Wakes(models=ALL_MODELS),
    ),
    (
        "a ModelVersion changed: itself, its duplicate, every Model of its namespace",
        wakes.version_changed(INDICES, (NS, "v1"), {"model": "llm", "version": "1"}, itself=True),
        Wakes(versions=[(NS, "v1"), (NS, "v1-copy")], models=ALL_MODELS),
    ),
    (
        "a ModelVersion deleted (its spec from the event): its duplicate now owns the pair",
        wakes.version_changed(
            INDICES, (NS, "v1-gone"), {"model": "llm", "version": "1"}, itself=True
        ),
        Wakes(versions=[(NS, "v1-gone"), (NS, "v1"), (NS, "v1-copy")], models=ALL_MODELS),
    ),
    (
        "a child: the Model in its label",
        wakes.child_changed((NS, "chat")),
        Wakes(models=[(NS, "chat")]),
    ),
    (
        "a child whose label names no Model: nothing",
        wakes.child_changed((NS, "")),
        Wakes(),
    ),
    (
        "a CA Secret changed: the Registry and the external Model naming it",
        wakes.secret_changed(INDICES, NS, "ca", "MODIFIED"),
        Wakes(registries=[(NS, "hub")], probes=[(NS, "remote")]),
    ),
    (
        "a signature key Secret: the Registry trusting it",
        wakes.secret_changed(INDICES, NS, "keys", "MODIFIED"),
        Wakes(registries=[(NS, "hub")]),
    ),
    (
        "a parameter Secret's data changed: no pass (its coming and going wake its Models)",
        wakes.secret_changed(INDICES, NS, "api-keys", "MODIFIED"),
        Wakes(),
    ),
    (
        "a parameter Secret came: the Models of its namespace whose parameters name it",
        wakes.secret_changed(INDICES, NS, "api-keys", "ADDED"),
        Wakes(models=[(NS, "chat")]),
    ),
    (
        "a parameter Secret went",
        wakes.secret_changed(INDICES, NS, "api-keys", "DELETED"),
        Wakes(models=[(NS, "chat")]),
    ),
    (
        "a Registry's readiness changed: the versions and templates verifying against it",
        wakes.registry_users(INDICES, (NS, "hub")),
        Wakes(versions=[(NS, "v1"), (NS, "v2")], templates=[(NS, "llm")]),
    ),
    (
        "a Registry of another namespace: only its namespace's users",
        wakes.registry_users(INDICES, ("other", "hub")),
        Wakes(templates=[("other", "llm")]),
    ),
]


@pytest.mark.parametrize(("change", "woken", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_a_change_wakes(change: str, woken: Wakes, expected: Wakes) -> None:
    assert woken == expected


def test_the_relations_the_rules_follow() -> None:
    assert wakes.models_using_template(INDICES, NS, "llm") == ["chat", "embed"]
    assert wakes.models_using_template(INDICES, NS, "none") == []
    assert [v["metadata"]["name"] for v in wakes.same_version(INDICES, (NS, "v1"))] == ["v1-copy"]
    assert wakes.same_version(INDICES, (NS, "gone")) == []
    assert wakes.registries_using_secret(INDICES, NS, "mirror-creds") == ["mirror"]
    assert wakes.external_models_using_secret(INDICES, NS, "remote-creds") == ["remote"]


def test_empty_stores_wake_nobody_else() -> None:
    assert wakes.secret_changed({}, NS, "ca", "ADDED") == Wakes()
    assert wakes.registry_changed({}, (NS, "hub"), itself=True) == Wakes(registries=[(NS, "hub")])

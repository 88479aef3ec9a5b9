"""Who wakes whom: for each change, the objects that must look again.

A change to ... wakes:
- a Model (`model_changed`): itself; its template before and after when it moved (their lists
  of Models), debounced.
- a ModelTemplate (`template_changed`): itself; its Models, when what they read of it changed.
- a Registry (`registry_changed`): itself; every Model of its namespace (they take their pull
  Secret and image host from it).
- a ModelVersion (`version_changed`): itself; the versions publishing the same (model,
  version); every Model of its namespace.
- a child, a Deployment, Service, autoscaler or pod (`child_changed`): the Model in its label.
- a consenting Secret (`secret_changed`): the Registries naming it; the external Models naming
  it (their probe is asked again); when it comes or goes, the Models whose parameters name it.
- a Registry's readiness or trust, found by its pass (`registry_users`): the ModelVersions and
  templates that verify against it.

Whether a change to an object wakes the object itself is the event filters' call (a status
write, a relist, our own write coming back: `modelyard.handlers.predicates`); they say so with
`itself`. Everything here is a pure function over the stores (`modelyard.reconcile.indices`)
that returns keys; asking for the passes is `Runner.wake`'s.

It sits in `reconcile`, not in `handlers` beside the informers that use most of it, because
the runner uses it too (a Registry's pass wakes its users; a template's pass lists its Models;
a version's pass reads its duplicates), and handlers may import reconcile, not the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.reconcile.indices import Indices, Key, Manifest, every, first, in_namespace, named


@dataclass
class Wakes:
    """Keys to look again, by what looks; asked in this order."""

    registries: list[Key] = field(default_factory=list)
    #: External Models whose probe is asked again (their verdict, not a pass, changes).
    probes: list[Key] = field(default_factory=list)
    versions: list[Key] = field(default_factory=list)
    templates: list[Key] = field(default_factory=list)
    #: Templates whose list of Models changed: a burst of new Models changes it with each, and
    #: deserves one write for the burst, so these passes wait a moment (debounced).
    template_lists: list[Key] = field(default_factory=list)
    models: list[Key] = field(default_factory=list)


# -- the rules ---------------------------------------------------------------------------------


def model_changed(key: Key, before: str | None, after: str | None, *, itself: bool) -> Wakes:
    """A Model changed; `before` and `after`: its template before and after the event."""
    moved = (
        [(key[0], template) for template in (before, after) if template] if before != after else []
    )
    return Wakes(template_lists=moved, models=[key] if itself else [])


def template_changed(indices: Indices, key: Key, *, itself: bool, for_models: bool) -> Wakes:
    """A ModelTemplate changed; `for_models`: in something its Models read (or it is gone)."""
    models = [(key[0], name) for name in models_using_template(indices, *key)] if for_models else []
    return Wakes(templates=[key] if itself else [], models=models)


def registry_changed(indices: Indices, key: Key, *, itself: bool) -> Wakes:
    """A Registry changed. Models take their pull Secret and image host from it."""
    return Wakes(registries=[key] if itself else [], models=_models_of(indices, key[0]))


def version_changed(indices: Indices, key: Key, spec: Mapping[str, Any], *, itself: bool) -> Wakes:
    """A ModelVersion changed (`spec`: as the event tells it, also for one deleted). A duplicate
    of it may now own its (model, version) pair; Models may roll to it."""
    duplicates = [(key[0], other["metadata"]["name"]) for other in same_version(indices, key, spec)]
    return Wakes(
        versions=([key] if itself else []) + duplicates, models=_models_of(indices, key[0])
    )


def child_changed(owner: Key) -> Wakes:
    """A child changed; `owner`: the (namespace, Model) of its label."""
    if not owner[1]:
        return Wakes()  # our label without a Model's name: not ours to reconcile
    return Wakes(models=[owner])


def secret_changed(indices: Indices, namespace: str, secret: str, event: str) -> Wakes:
    """A consenting Secret appeared, changed, or stopped consenting (or is gone)."""
    models = []
    if event in ("ADDED", "DELETED"):
        index = indices.get("model_bodies") or {}
        for key in in_namespace(indices, "model_bodies", namespace):
            parameters = ((first(index, key) or {}).get("spec") or {}).get("parameters")
            # Any shape can reach here past a relaxed CRD; the Model's pass says what is
            # wrong with it.
            if isinstance(parameters, dict) and any(
                isinstance(v, str) and v.startswith(f"{secret}/") for v in parameters.values()
            ):
                models.append(key)
    return Wakes(
        registries=[
            (namespace, name) for name in registries_using_secret(indices, namespace, secret)
        ],
        probes=[
            (namespace, name) for name in external_models_using_secret(indices, namespace, secret)
        ],
        models=models,
    )


def registry_users(indices: Indices, key: Key) -> Wakes:
    """A Registry's pass found it ready or not, or trusting other keys, than before."""
    namespace, name = key
    versions = [
        (namespace, body["metadata"]["name"])
        for body in every(indices.get("version_bodies"), namespace)
        if (body.get("spec") or {}).get("registry") == name
    ]
    templates = indices.get("template_bodies") or {}
    tagged = [
        template_key
        for template_key in in_namespace(indices, "template_bodies", namespace)
        if (((first(templates, template_key) or {}).get("spec") or {}).get("image") or {}).get(
            "registry"
        )
        == name
    ]
    return Wakes(versions=versions, templates=tagged)


# -- the relations they follow -----------------------------------------------------------------


def models_using_template(indices: Indices, namespace: str, template: str) -> list[str]:
    return sorted(set(every(indices.get("models_by_template"), (namespace, template))))


def _models_of(indices: Indices, namespace: str) -> list[Key]:
    index = indices.get("model_bodies") or {}
    return [(namespace, name) for name in sorted(n for (ns, n) in list(index) if ns == namespace)]


def same_version(
    indices: Indices, key: Key, spec: Mapping[str, Any] | None = None
) -> list[Manifest]:
    """Other ModelVersions publishing the same (model, version) pair in the namespace.

    `spec` is given for a version that is gone from the index (deleted): its duplicates
    must look again, since one of them now owns the pair.
    """
    if spec is None:
        body = named(indices, "version_bodies", key)
        if body is None:
            return []
        spec = body.get("spec") or {}
    return [
        dict(other)
        for other in every(indices.get("version_bodies"), key[0])
        if (other.get("metadata") or {}).get("name") != key[1]
        and (other.get("spec") or {}).get("model") == spec.get("model")
        and (other.get("spec") or {}).get("version") == spec.get("version")
    ]


def registries_using_secret(indices: Indices, namespace: str, secret: str) -> list[str]:
    """Registries whose credentials, CA or signature keys are in `secret`."""
    names = []
    for body in every(indices.get("registry_bodies"), namespace):
        spec = body.get("spec") or {}
        keys = ((spec.get("signatures") or {}).get("publicKeys")) or []
        used = {
            spec.get("credentialsSecret"),
            (spec.get("tls") or {}).get("caSecret"),
            *(key.get("secretName") for key in keys if isinstance(key, dict)),
        }
        if secret in used:
            names.append(body["metadata"]["name"])
    return names


def external_models_using_secret(indices: Indices, namespace: str, secret: str) -> list[str]:
    """External Models whose credentials or CA are in `secret`."""
    index = indices.get("model_bodies") or {}
    names = []
    for key in in_namespace(indices, "model_bodies", namespace):
        external = ((first(index, key) or {}).get("spec") or {}).get("external") or {}
        used = (
            (external.get("credentials") or {}).get("secretName"),
            (external.get("tls") or {}).get("caSecret"),
        )
        if secret in used:
            names.append(key[1])
    return names


__all__ = [
    "Wakes",
    "child_changed",
    "external_models_using_secret",
    "model_changed",
    "models_using_template",
    "registries_using_secret",
    "registry_changed",
    "registry_users",
    "same_version",
    "secret_changed",
    "template_changed",
    "version_changed",
]
